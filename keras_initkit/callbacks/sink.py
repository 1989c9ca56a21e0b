"""The monitors' TensorBoard sink: one writer per fit, and a log directory that fails
mid-training never stops it."""

import os

from keras_initkit import summary
from keras_initkit.callbacks.warning import warn


class Sink:
    """Writes a callback's summaries to `<log_dir>/<run>` (the monitors':
    `<log_dir>/initkit`), each step once.

    Opened at every train begin (only the chief of a multi-worker job writes), flushed
    at epoch ends, closed at train end. The step last written survives across fits.
    """

    def __init__(self, log_dir, owner, run=summary.RUN_NAME):
        self.log_dir, self.run = log_dir, run
        self.owner = owner  # the callback's class name, for warnings
        self.writer = None
        self.layout_written = False
        self.last_step = None

    def open(self):
        """A new writer for this fit; `ValueError` when the directory is unusable."""
        self.close(final=True)  # a previous fit ended without on_train_end
        if self.log_dir is None or not summary.is_chief():
            return
        try:
            self.writer = summary.create_writer(self.log_dir, self.run)
            os.makedirs(self.writer.logdir, exist_ok=True)
        except (OSError, ValueError) as error:
            raise ValueError(
                "Argument `log_dir` must be a writable directory path. "
                f"Received: log_dir={self.log_dir!r} ({error})"
            ) from error
        self.layout_written = False

    def write(self, step, scalars, histograms=None):
        """Write one update, unless this step was written already."""
        if self.writer is not None and step != self.last_step:
            self._run(lambda w: w.write(step, scalars=scalars, histograms=histograms))
            self.last_step = step

    def write_meta(self, step, layers, thresholds, lower, **where):
        """The `initkit/layers` record: layers in forward order, metric thresholds and
        where they apply (`exempt`, `exempt_until`, `judged_from`, `epoch_ends`: see
        `keras_initkit.summary.SummaryWriter.write_meta`)."""
        if self.writer is not None:
            self._run(lambda w: w.write_meta(step, layers, thresholds, lower, **where))

    def write_findings(self, step, records):
        """The `initkit/findings/<owner>` record: every finding so far."""
        if self.writer is not None:
            self._run(lambda w: w.write_findings(step, records, source=self.owner))

    def flush(self, step, layout):
        """Write the Custom Scalars `layout` once per writer, then flush."""
        if self.writer is not None and not self.layout_written:
            if layout:
                self._run(lambda w: w.write(step, layout=layout))
            self.layout_written = True
        if self.writer is not None:
            self._run(lambda w: w.flush())

    def close(self, step=None, layout=None, final=False):
        """Flush (layout included) and close; `final` only drops the writer."""
        if self.writer is None:
            return
        if not final:
            self.flush(step, layout)
        if self.writer is not None:
            self._run(lambda w: w.close(), reopen=False)
        self.writer = None

    def _run(self, action, reopen=True):
        """Run `action(writer)`; a failing log directory never stops training.

        If the directory was removed (and `reopen`), warn and start a new event file in
        a recreated one (updates since the last flush are lost). If writing fails
        (unwritable, disk full, the path is now a file), warn and stop writing for this
        fit: logs and findings go on.
        """
        writer = self.writer
        try:
            action(writer)
            if os.path.isdir(writer.logdir):
                return
            error = FileNotFoundError(f"the directory {writer.logdir!r} was removed")
        except Exception as e:  # TensorFlow's file errors are not OSErrors
            error = e
        self.writer = None
        try:
            writer.close()
        except Exception:
            pass  # what it held is lost either way
        removed = isinstance(error, FileNotFoundError) and not os.path.exists(writer.logdir)
        if reopen and removed and self._recreate(writer.logdir):
            return
        warn(
            f"{self.owner} stopped writing TensorBoard summaries to {writer.logdir!r} for "
            f"this fit: {type(error).__name__}: {error}. Training goes on; metrics still go "
            "to the logs.",
            UserWarning,
        )

    def _recreate(self, logdir):
        try:
            os.makedirs(logdir)
        except OSError:
            return False
        self.writer = summary.create_writer(self.log_dir, self.run)
        self.layout_written = False
        warn(
            f"{self.owner}: the TensorBoard log directory {logdir!r} was removed during "
            "training; writing to a new event file there (summaries since the last flush "
            "are lost).",
            UserWarning,
        )
        return True

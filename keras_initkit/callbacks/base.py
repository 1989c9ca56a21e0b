"""The shared machinery of the training monitors, written once.

A monitor subclass declares only what it measures and how it judges it, through four
hooks (the fastai-hook idea: one small overridable surface):

- `reducers()`: the probe `Reducer`s it needs;
- `judges(site)`: whether it reports on a layer (`Site`);
- `report(site, values, step)`: the scalar metrics it reports for a layer, from the
  probe's values;
- `check(site, scalars, step, epoch_end)`: `(rule, message)` findings for a layer.

`Monitor` does everything else: validating arguments and probe data, choosing the
layers, building ONE `Probe` with the union of its parts' reducers (one compiled forward
pass and one host transfer per update), scheduling updates, writing TensorBoard
summaries through `keras_initkit.summary`, adding values to the epoch `logs`, and
warning once per layer, rule and fit.
"""

import dataclasses
import os
import sys
import warnings

import keras

from keras_initkit import summary
from keras_initkit.probe import ActivationSample, Probe, as_batches, make_sites, resolve_layers
from keras_initkit.probe.data import check_positive_int
from keras_initkit.probe.gradients import GradientProbe

# Custom Scalars categories, in display order.
CATEGORIES = ("Saturation", "Dead units", "Batch norm", "Gradients", "Activations")
# A warning that groups several layers' findings lists at most this many of them.
MAX_LISTED = 10
_INTERNAL = ("keras_initkit", "keras", "tensorflow", "jax", "torch", "tf_keras")


def _user_stacklevel():
    """`warnings.warn`'s stacklevel that names the first frame outside Keras and us.

    A finding is raised deep inside `model.fit`; pointing the warning at the user's
    own line (usually the `fit` call) reads better than at this file, and makes
    Python's per-location warning filters act on user code.
    """
    roots = tuple(
        os.path.dirname(module.__file__) + os.sep
        for name in _INTERNAL
        if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)
    )
    frame, level = sys._getframe(1), 1  # the frame that calls warnings.warn
    while frame is not None and frame.f_code.co_filename.startswith(roots):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 2


class InitkitWarning(UserWarning):
    """A training-health finding of a keras_initkit monitor (a layer crossed a threshold).

    Issued once per layer, rule and fit. Filter it like any warning:

    ```python
    import warnings

    warnings.filterwarnings("error", category=keras_initkit.callbacks.InitkitWarning)
    ```
    """


@dataclasses.dataclass(frozen=True)
class Finding:
    """One warning a monitor issued.

    Attributes:
        step: the global training step (batches trained) it was measured at.
        layer: the layer's display name.
        rule: which rule fired, e.g. `"dead_fraction"`.
        message: the full warning text.
    """

    step: int
    layer: str
    rule: str
    message: str


def check_fraction(value, name):
    """Validate a threshold that is a fraction in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"Argument `{name}` must be a number in [0, 1]. Received: {name}={value!r}"
        )
    return float(value)


def check_positive(value, name, above=0.0):
    """Validate a threshold that must be a number greater than `above`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > above:
        raise ValueError(
            f"Argument `{name}` must be a number greater than {above:g}. Received: {name}={value!r}"
        )
    return float(value)


def _check_layers(layers):
    if layers is None:
        return None
    items = [layers] if isinstance(layers, (str, keras.layers.Layer)) else layers
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(
            "Argument `layers` must be None, a layer name or layer, or a non-empty list "
            f"of them. Received: layers={layers!r}"
        )
    for item in items:
        if not isinstance(item, (str, keras.layers.Layer)):
            raise ValueError(
                "Argument `layers` must contain layer names or layer objects. "
                f"Received: {item!r} of type {type(item).__name__}"
            )
    return list(items)


class Monitor(keras.callbacks.Callback):
    """Base class of the training monitors: probe a fixed batch, report, warn.

    At every train begin (the first one also validates the probe data against the
    model), every `update_freq` batches and at every epoch end, the monitor runs its model on the probe data with `training=False`
    semantics, computes each watched layer's statistics on device, and brings them to
    the host in one transfer. It then writes them to TensorBoard as `<metric>/<layer>`
    in the run `<log_dir>/initkit`, adds the headline metrics to the epoch `logs` as
    `<metric>/<layer>`, and records a `Finding` once per layer, rule and fit when a
    threshold is crossed, with one `InitkitWarning` per rule listing the layers that
    crossed it (pointing at the user's `fit` line; `verbose=0` only records). Training is
    never changed: no weight, batch-norm statistic, optimizer or random state moves.

    Subclasses override the hooks `reducers`, `judges`, `report` and `check`, and
    set the class attributes `log_metrics` (the metrics added to `logs`) and `layout`
    (`{Custom Scalars category: [metric, ...]}`).

    Args:
        data: the fixed probe set: a NumPy array or tensor, a list or dict of them for
            multi-input models, a `tf.data.Dataset` or a `keras.utils.PyDataset`
            (tuples are read as `(x, y)`). A few hundred samples are plenty. Validated
            and copied once, at construction.
        log_dir: TensorBoard log directory; summaries go to `<log_dir>/initkit`.
            `None` writes no summaries (logs and warnings still work). In a
            multi-worker job only the chief writes (`TF_CONFIG`'s chief, or worker 0
            without one). Defaults to `None`.
        update_freq: `"epoch"` to measure at the end of each epoch, or an int `N` to
            measure every `N` training batches (counted globally, across fits) and at
            the end of each epoch. Defaults to `"epoch"`.
        layers: layer names or layer objects to watch; `None` watches every layer the
            monitor can judge. Layers it cannot judge are skipped. Defaults to `None`.
        histograms: also write a 1024-value sample of the output of each watched layer
            that ends in a bounded or rectifier activation, as the histogram
            `activations/<layer>`. Defaults to `False`.
        add_to_logs: add `<metric>/<layer>` values to the epoch `logs` (so `History`,
            `CSVLogger` and `EarlyStopping` placed after this callback see them; place
            `keras.callbacks.TensorBoard` before it, or it copies them into its run).
            Defaults to `True`.
        verbose: `1` issues an `InitkitWarning` per rule and update that found
            something (one line, or one line per layer when several layers share the
            rule); `0` only records findings in `monitor.findings`. Warnings about the
            monitor's own setup are always issued. Defaults to `1`.
        batch_size: run array probe data through the model in chunks of this many
            samples; `None` runs it at once. Defaults to `None`.
        max_batches: use at most this many batches of a dataset. Defaults to `None`
            (all; an infinite dataset needs it).

    ```python
    class ScaleMonitor(keras_initkit.callbacks.Monitor):
        log_metrics = ("activation_std",)
        layout = {"Activations": ("activation_std",)}

        def reducers(self):
            return [keras_initkit.probe.ActivationMoments()]

        def judges(self, site):
            return site.has_kernel

        def report(self, site, values, step):
            return {"activation_std": values["activation_std"]}

        def check(self, site, scalars, step, epoch_end):
            if scalars["activation_std"] > 100:
                yield "exploding", "output std above 100", "lower the learning rate."

    model.fit(x, y, callbacks=[ScaleMonitor(x[:256], log_dir="logs")])
    ```
    """

    log_metrics = ()
    layout = {}
    needs_gradients = False  # measured by a GradientProbe instead of the shared probe

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        add_to_logs=True,
        verbose=1,
        batch_size=None,
        max_batches=None,
    ):
        super().__init__()
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                'Argument `update_freq` must be "epoch" or a positive int (a number of '
                f"batches). Received: update_freq={update_freq!r}"
            )
        check_positive_int(batch_size, "batch_size")
        if verbose not in (0, 1, 2, True, False):
            raise ValueError(f"Argument `verbose` must be 0 or 1. Received: verbose={verbose!r}")
        self.log_dir = summary.check_log_dir(log_dir)
        self.update_freq = update_freq
        self.layers = _check_layers(layers)
        self.histograms = bool(histograms)
        self.add_to_logs = bool(add_to_logs)
        self.verbose = int(verbose)
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._batches, self.source = as_batches(
            data, batch_size=batch_size, max_batches=max_batches, argument="data"
        )
        if any(p.needs_gradients for p in self._parts()):
            for i, (_, y) in enumerate(self._batches):
                if y is None:
                    raise ValueError(
                        "Gradients need targets: `data` must give `(x, y)` pairs. "
                        f"Received: no targets in batch {i} ({self.source})"
                    )
        self._tensors = None  # device copies of the probe batches, made once
        self._probe = None
        self._gradient_probe = None
        self._probe_model = None
        self._assignment = []  # [(part, [site, ...])]
        self._writer = None
        self._layout_written = False
        self._step = None  # global batch count; continues across fits
        self._epoch_start = 0
        self._last_update = None
        self._last_written = None
        self._validated = False
        self._warned = set()
        self.latest = {}
        self.findings = []

    # -- hooks a monitor overrides ------------------------------------------------------

    def reducers(self):
        """The probe `Reducer`s this monitor needs."""
        return []

    def judges(self, site):
        """Whether this monitor reports on `site` (a `keras_initkit.probe.Site`)."""
        return False

    def report(self, site, values, step):
        """`{metric: float}` to report for `site`, from the probe's `values`."""
        return {}

    def check(self, site, scalars, step, epoch_end):
        """`(rule, observation, fix)` findings for `site`, from its `scalars`.

        `observation` says what was measured ("92% of units dead"), `fix` what to
        try; findings of several layers that share a rule and fix are warned together,
        the fix once. `(rule, message)` pairs are accepted too. Messages are prefixed
        with the layer's name and the `step` (global batch count). `epoch_end` is
        True for the measurement at the end of an epoch.
        """
        return ()

    def _parts(self):
        """The monitors whose hooks this callback runs (TrainingMonitor: several)."""
        return [self]

    def _configure(self, **thresholds):
        """Validate and store a subclass's own arguments (thresholds)."""

    @classmethod
    def part(cls, **thresholds):
        """An instance used only for its hooks, inside another monitor (TrainingMonitor).

        It holds validated thresholds and no data, writer or schedule.
        """
        part = cls.__new__(cls)
        keras.callbacks.Callback.__init__(part)
        part._configure(**thresholds)
        return part

    # -- setup ----------------------------------------------------------------------

    def _setup(self):
        """Build the probe for `self.model` (once per model)."""
        model = self.model
        if self._probe is not None and self._probe_model is model:
            return
        parts = [p for p in self._parts() if not p.needs_gradients]
        gradient_parts = [p for p in self._parts() if p.needs_gradients]
        candidates = make_sites(model, resolve_layers(model, self.layers))
        kept = [s for s in candidates if any(p.judges(s) for p in parts)]
        gradient_sites = []
        if gradient_parts:
            self._gradient_probe = GradientProbe(model, layers=self.layers)
            gradient_sites = self._gradient_probe.sites
        judged = {id(s.layer) for s in kept} | {id(s.layer) for s in gradient_sites}
        name = type(self).__name__
        if self.layers is not None:
            for site in candidates:
                if id(site.layer) not in judged:
                    self._warn(
                        f"{name} cannot judge layer '{site.name}' (activation: "
                        f"{site.activation or 'linear'}); it is skipped."
                    )
        if not judged:
            self._warn(f"{name} found no layer it can judge in model '{model.name}'.")
        reducers = {}
        for part in parts:
            for reducer in part.reducers():
                reducers.setdefault(reducer.name, reducer)
        if self.histograms:
            reducers.setdefault("sample", ActivationSample(1024))
        self._probe = Probe(model, list(reducers.values()), layers=[s.layer for s in kept])
        self._probe_model = model
        sites = self._probe.sites
        self._assignment = [(p, [s for s in sites if p.judges(s)]) for p in parts]
        self._assignment += [(p, list(gradient_sites)) for p in gradient_parts]
        if self._tensors is None:
            convert = keras.ops.convert_to_tensor
            self._tensors = [
                (
                    keras.tree.map_structure(convert, x),
                    None if y is None else keras.tree.map_structure(convert, y),
                )
                for x, y in self._batches
            ]
        self._validated = False

    def _warn(self, message):
        warnings.warn(message, InitkitWarning, stacklevel=_user_stacklevel())

    # -- measuring and reporting ----------------------------------------------------

    def _measure(self):
        """Run the probe(s): `({site: {metric: float}}, activation ProbeResult or None)`."""
        try:  # the first pass is where probe data and model meet
            result = (
                self._probe.run_batches(self._tensors, self.source) if self._probe.sites else None
            )
            gradients = None
            if self._gradient_probe is not None and self._gradient_probe.sites:
                gradients = self._gradient_probe.run_batches(self._tensors, self.source)
        except Exception as error:
            if self._validated:
                raise
            self._probe = None
            shapes = keras.tree.map_structure(lambda a: tuple(a.shape), self._batches[0][0])
            raise ValueError(
                f"Argument `data` does not fit model '{self.model.name}': {error} "
                f"Received: data with input shape(s) {shapes} ({self.source})"
            ) from error
        self._validated = True
        scalars = {}
        for part, sites in self._assignment:
            source = gradients if part.needs_gradients else result
            for site in sites:
                values = source.metrics.get(site.name) if source is not None else None
                if values:
                    reported = part.report(site, values, self._step)
                    if reported:
                        scalars.setdefault(site.name, {}).update(reported)
        return scalars, result

    def _update(self, epoch_end):
        step = self._step
        # Inside a JAX fit the weights live outside the variables between epochs (the
        # variables are purged); Keras' hook for callbacks puts them back first.
        sync = getattr(self.model, "jax_state_sync", None)
        if callable(sync):
            sync()
        scalars, result = self._measure()
        self.latest = scalars
        self._last_update = step
        if self._writer is not None and step != self._last_written:
            histograms = None
            if self.histograms and result is not None:
                histograms = {
                    f"activations/{site}": values["activation_values"]
                    for site, values in result.metrics.items()
                    if "activation_values" in values
                }
            self._writing(
                lambda writer: writer.write(
                    step,
                    scalars={
                        f"{metric}/{site}": value
                        for site, metrics in scalars.items()
                        for metric, value in metrics.items()
                    },
                    histograms=histograms,
                )
            )
            self._last_written = step
        self._check(epoch_end)

    def _check(self, epoch_end):
        """Record new findings; warn once per rule and fix, listing its layers."""
        groups = {}
        for part, sites in self._assignment:
            for site in sites:
                scalars = self.latest.get(site.name)
                if not scalars:
                    continue
                for rule, observation, *fix in part.check(site, scalars, self._step, epoch_end):
                    key = (site.name, rule)
                    if key in self._warned:
                        continue
                    self._warned.add(key)
                    fix = fix[0] if fix else ""
                    text = f"{site.name} (step {self._step}): {observation}"
                    text += f" — {fix}" if fix else ""
                    self.findings.append(Finding(self._step, site.name, rule, text))
                    groups.setdefault((rule, fix), []).append((text, site.name, observation))
        if not self.verbose:
            return
        for (_, fix), found in groups.items():
            if len(found) == 1:
                self._warn(found[0][0])
                continue
            lines = [f"{len(found)} layers (step {self._step}): {fix or 'see below'}"]
            lines += [f"  {name}: {observation}" for _, name, observation in found[:MAX_LISTED]]
            if len(found) > MAX_LISTED:
                lines.append(
                    f"  ... and {len(found) - MAX_LISTED} more (`monitor.findings` lists all)"
                )
            self._warn("\n".join(lines))

    def _write_layout(self):
        present = {m for metrics in self.latest.values() for m in metrics}
        layout = {}
        for part in self._parts():
            for category, metrics in part.layout.items():
                chosen = layout.setdefault(category, [])
                chosen.extend(m for m in metrics if m in present and m not in chosen)
        layout = {c: layout[c] for c in CATEGORIES if layout.get(c)}
        if layout:
            self._writing(lambda writer: writer.write(self._step, layout=layout))
        self._layout_written = True

    def _writing(self, action, reopen=True):
        """Run `action(writer)`; a failing log directory never stops training.

        If the directory was removed (and `reopen`), warn and start a new event file in
        a recreated one (updates since the last flush are lost). If writing fails
        (unwritable, disk full, the path is now a file), warn and stop writing for this
        fit: logs and findings go on.
        """
        writer = self._writer
        try:
            action(writer)
            if os.path.isdir(writer.logdir):
                return
            error = FileNotFoundError(f"the directory {writer.logdir!r} was removed")
        except Exception as e:  # TensorFlow's file errors are not OSErrors
            error = e
        self._writer = None
        try:
            writer.close()
        except Exception:
            pass  # what it held is lost either way
        removed = isinstance(error, FileNotFoundError) and not os.path.exists(writer.logdir)
        if reopen and removed:
            try:
                os.makedirs(writer.logdir)
            except OSError:
                pass
            else:
                self._writer = summary.create_writer(self.log_dir)
                self._layout_written = False
                warnings.warn(
                    f"{type(self).__name__}: the TensorBoard log directory {writer.logdir!r} "
                    "was removed during training; writing to a new event file there "
                    "(summaries since the last flush are lost).",
                    stacklevel=_user_stacklevel(),
                )
                return
        warnings.warn(
            f"{type(self).__name__} stopped writing TensorBoard summaries to "
            f"{writer.logdir!r} for this fit: {type(error).__name__}: {error}. Training "
            "goes on; metrics still go to the logs.",
            stacklevel=_user_stacklevel(),
        )

    # -- Keras callback interface ---------------------------------------------------

    def on_train_begin(self, logs=None):
        self._warned = set()
        self.findings = []
        if self._writer is not None:  # a previous fit ended without on_train_end
            self._writer.close()
            self._writer = None
        if self.log_dir is not None and summary.is_chief():  # one writer per job
            try:
                self._writer = summary.create_writer(self.log_dir)
                os.makedirs(self._writer.logdir, exist_ok=True)
            except (OSError, ValueError) as error:
                raise ValueError(
                    "Argument `log_dir` must be a writable directory path. "
                    f"Received: log_dir={self.log_dir!r} ({error})"
                ) from error
            self._layout_written = False
        if self._step is None:
            optimizer = getattr(self.model, "optimizer", None)
            iterations = getattr(optimizer, "iterations", None)
            self._step = 0 if iterations is None else int(keras.ops.convert_to_numpy(iterations))
        self._setup()
        # Measured at every train begin, also when no step was taken since the last
        # update: the weights may have changed in between (load_weights, lsuv_init).
        self._update(epoch_end=False)  # the first one validates the data against the model

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._step

    @property
    def async_safe(self):
        """Whether Keras may run this callback's batch hooks on a worker thread.

        Keras syncs with the device after every training step (to turn the logs
        into floats) when any callback has a batch hook that is not async-safe. An
        `"epoch"` monitor's batch hook only counts batches, so it allows the
        asynchronous path: the monitor then costs nothing between its updates. A
        monitor that measures every N batches must run in step with training.
        """
        return self.update_freq == "epoch"

    def on_train_batch_end(self, batch, logs=None):
        # `max`: asynchronous hooks (see `async_safe`) may run out of order.
        self._step = max(self._step, self._epoch_start + batch + 1)
        if self.update_freq != "epoch" and self._step % self.update_freq == 0:
            self._update(epoch_end=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._last_update != self._step:
            self._update(epoch_end=True)
        else:
            self._check(epoch_end=True)
        if self.add_to_logs and logs is not None:
            wanted = {m for part in self._parts() for m in part.log_metrics}
            for site, metrics in self.latest.items():
                for metric, value in metrics.items():
                    if metric in wanted:
                        logs[f"{metric}/{site}"] = value
        if self._writer is not None:
            if not self._layout_written:
                self._write_layout()
            if self._writer is not None:
                self._writing(lambda writer: writer.flush())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            if not self._layout_written:
                self._write_layout()
            if self._writer is not None:
                self._writing(lambda writer: writer.close(), reopen=False)
            self._writer = None

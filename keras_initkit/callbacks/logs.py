"""Keras' epoch `logs` to TensorBoard on every backend."""

import numbers

import keras
import numpy as np

from keras_initkit import summary
from keras_initkit.callbacks.sink import Sink
from keras_initkit.probe.backend import to_numpy
from keras_initkit.probe.gradients import learning_rate


class TensorBoardLogs(keras.callbacks.Callback):
    """Write the loss and metrics of every epoch to TensorBoard, on any backend.

    What `keras.callbacks.TensorBoard` writes per epoch, in its layout: the run
    `<log_dir>/train` gets `epoch_loss`, `epoch_<metric>` and `epoch_learning_rate`,
    the run `<log_dir>/validation` the `val_` keys without their prefix (`epoch_loss`,
    ...), at step = epoch. Keras' callback imports `tf.summary`, so on JAX or PyTorch
    without TensorFlow it fails with "No module named 'tensorflow'"
    (keras-team/keras#19121); this one writes with the `tensorboard` package's own
    event writer there (`tf.summary` on TensorFlow), so the same code shows the same
    curves on every backend. It writes epoch scalars only: no graph, weight
    histograms or profiling (use Keras' callback for those, on TensorFlow).

    Keys holding a `/` are left out: they are the monitors' `<metric>/<layer>` values
    (`add_to_logs`), which the monitors write to `<log_dir>/initkit` themselves; so are
    values that are not numbers (a NaN loss is written). A log directory that fails
    during training never stops it: a warning says so, as for the monitors.

    Args:
        log_dir: the TensorBoard log directory (`tensorboard --logdir log_dir`).
            Defaults to `"logs"`, Keras' default.

    ```python
    model.fit(
        x,
        y,
        validation_data=(x_val, y_val),
        callbacks=[
            keras_initkit.callbacks.TensorBoardLogs("logs"),
            keras_initkit.callbacks.TrainingMonitor(x_val[:256], log_dir="logs"),
        ],
    )
    ```
    """

    def __init__(self, log_dir="logs"):
        super().__init__()
        if summary.check_log_dir(log_dir) is None:
            raise ValueError("Argument `log_dir` must be a directory path. Received: log_dir=None")
        self.log_dir = log_dir
        name = type(self).__name__
        self._sinks = {run: Sink(log_dir, name, run=run) for run in ("train", "validation")}

    def on_train_begin(self, logs=None):
        for sink in self._sinks.values():
            sink.open()

    def on_epoch_end(self, epoch, logs=None):
        runs = {"train": {}, "validation": {}}
        for key, value in (logs or {}).items():
            if "/" in key or not _number(value):
                continue
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            runs[run][f"epoch_{name}"] = float(value)
        rate = _learning_rate(self.model)
        if rate is not None:
            runs["train"]["epoch_learning_rate"] = rate
        for run, scalars in runs.items():
            if scalars:
                self._sinks[run].write(epoch, scalars)
                self._sinks[run].flush(epoch, None)

    def on_train_end(self, logs=None):
        for sink in self._sinks.values():
            sink.close()


def _number(value):
    if isinstance(value, (bool, str)):
        return False
    return np.asarray(value).size == 1 and np.issubdtype(np.asarray(value).dtype, np.number)


def _learning_rate(model):
    """The optimizer's current learning rate as a float, or None (no optimizer, or one
    without a single learning rate)."""
    rate = learning_rate(model)
    if rate is None:
        return None
    value = np.asarray(to_numpy(rate) if not isinstance(rate, numbers.Number) else rate)
    return float(value) if value.size == 1 else None

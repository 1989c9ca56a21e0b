"""`LSUVCallback`: run `lsuv_init` when training begins."""

import inspect
import weakref

import keras

from keras_initkit.lsuv import check_arguments, lsuv_init

_OPTIONS = tuple(
    name
    for name, p in inspect.signature(lsuv_init).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
)


class LSUVCallback(keras.callbacks.Callback):
    """Calibrate the model with LSUV at the start of its first `fit`.

    At `on_train_begin` this runs `keras_initkit.lsuv_init(model, x, ...)` once
    per model: a later `fit` of the same model (resuming, fine-tuning) keeps the
    trained weights, unless `refit=True`. The report is stored as
    `callback.report` and printed unless `verbose=0`. Arguments are validated
    here, so a bad value fails before training starts.

    Args:
        x: The calibration batch: a NumPy array or tensor, a list or dict of
            them, a `tf.data.Dataset` or a `keras.utils.PyDataset` (its first
            batch is used).
        refit: Calibrate again at the start of every `fit`. Defaults to `False`.
        **lsuv_kwargs: Keyword arguments of `keras_initkit.lsuv_init`:
            `layers`, `target_variance`, `tolerance`, `max_iterations`,
            `measure`, `center`, `verbose`.

    ```python
    model.fit(
        x_train, y_train, epochs=10,
        callbacks=[keras_initkit.callbacks.LSUVCallback(x_train[:512])],
    )
    ```
    """

    def __init__(self, x, *, refit=False, **lsuv_kwargs):
        super().__init__()
        unknown = sorted(set(lsuv_kwargs) - set(_OPTIONS))
        if unknown:
            raise ValueError(
                f"`LSUVCallback` accepts the keyword arguments of `lsuv_init` {_OPTIONS}. "
                f"Received: {', '.join(unknown)}"
            )
        check_arguments(**{k: v for k, v in lsuv_kwargs.items() if k != "layers"})
        if x is None:
            raise ValueError("Argument `x` is required. Received: x=None")
        self.x = x
        self.refit = bool(refit)
        self.lsuv_kwargs = lsuv_kwargs
        self.report = None
        self._calibrated = None  # weak reference to the model last calibrated

    def on_train_begin(self, logs=None):
        done = self._calibrated is not None and self._calibrated() is self.model
        if done and not self.refit:
            return
        self.report = lsuv_init(self.model, self.x, **self.lsuv_kwargs)
        self._calibrated = weakref.ref(self.model)
        if self.lsuv_kwargs.get("verbose", "auto") != 0:
            print(self.report)

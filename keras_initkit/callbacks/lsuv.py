"""`LSUVCallback`: run `lsuv_init` when training begins."""

import inspect
import weakref

import keras

from keras_initkit._keras_private import optimizer_steps
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
    trained weights, unless `refit=True`, whichever `LSUVCallback` instance it
    gets; so does the first `fit` of a model that has trained already (its
    optimizer has taken steps: a model loaded from a checkpoint), with a note
    unless `verbose=0`. The report is stored as `callback.report` and printed
    unless `verbose=0`. Arguments are validated here, so a bad value fails
    before training starts.

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

    def on_train_begin(self, logs=None):
        verbose = self.lsuv_kwargs.get("verbose", "auto") != 0
        if not self.refit:
            if _CALIBRATED.get(id(self.model)) is self.model:
                return  # calibrated at an earlier fit: its weights have trained since
            steps = optimizer_steps(self.model)
            if steps:
                if verbose:
                    print(
                        f"LSUVCallback: model '{self.model.name}' has trained already "
                        f"({steps} optimizer steps): its weights are kept. Pass refit=True "
                        "to calibrate them again."
                    )
                return
        self.report = lsuv_init(self.model, self.x, **self.lsuv_kwargs)
        _CALIBRATED[id(self.model)] = self.model
        if verbose:
            print(self.report)


# The models an LSUVCallback calibrated, by id (weakly: a model may be freed).
_CALIBRATED = weakref.WeakValueDictionary()

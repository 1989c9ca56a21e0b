"""`LSUV`: the pre-initialization marker of layer-sequential unit-variance init."""

import keras
from keras import ops

from keras_initkit.initializers._utils import check_seed, check_shape, compute_dtype, float_dtype


@keras.saving.register_keras_serializable(package="keras_initkit")
class LSUV(keras.initializers.Initializer):
    """Pre-initialization for LSUV: draws from `base`, marks the layer for calibration.

    Layer-sequential unit-variance init (Mishkin & Matas, 2016) first fills
    every kernel with an orthonormal matrix, then, on a batch of data, rescales
    each layer's kernel in forward order until the variance of its output is
    1. This initializer is the first stage: on its own it returns exactly what
    `base` returns (for the same seed). It also marks the layer: the data stage
    `keras_initkit.lsuv_init(model, x)` calibrates the layers whose
    `kernel_initializer` is an `LSUV` instance. `base` is resolved with
    `keras.initializers.get` and serialized inside this initializer's config.

    Args:
        base: The initializer to draw from: a Keras initializer name (such as
            `"orthogonal"` or `"keras_initkit>Sparse"`), a config dict or an
            `Initializer` instance. A kernel of rank > 2 is handled as the base
            handles it (`Orthogonal` flattens it to `(prod(shape[:-1]), out)`).
            Defaults to `"orthogonal"`.
        seed: An int, a `keras.random.SeedGenerator` or None. When not None it
            replaces the seed of a base that takes one (an int gives the same
            values on every call, a `SeedGenerator` new values on every call).
            None keeps the base's own seeding. Defaults to `None`.

    A float16 or bfloat16 kernel is drawn by `base` in float32, then rounded.

    ```python
    layer = keras.layers.Dense(
        256, kernel_initializer=keras_initkit.initializers.LSUV(seed=0)
    )
    ```

    Reference:

    - [Mishkin & Matas, 2016](https://arxiv.org/abs/1511.06422)
    - [Saxe et al., 2014](https://arxiv.org/abs/1312.6120)
    """

    def __init__(self, base="orthogonal", seed=None):
        resolved, error = None, None
        try:
            resolved = keras.initializers.get(base)
        except (ValueError, TypeError) as e:
            error = e
        if not isinstance(resolved, keras.initializers.Initializer):
            raise ValueError(
                "Argument `base` must be a Keras initializer name, config dict or "
                f"`keras.initializers.Initializer` instance. Received: base={base!r}"
            ) from error
        self.seed = check_seed(seed)
        config = resolved.get_config()
        if self.seed is not None and "seed" in config:
            resolved = resolved.__class__.from_config({**config, "seed": self.seed})
        self.base = resolved

    def __call__(self, shape, dtype=None):
        dtype = float_dtype(dtype)
        shape = check_shape("LSUV", shape, 0)  # the base judges the rank
        # Half precisions are drawn in float32 and rounded: Keras' Orthogonal
        # cannot run its QR in bfloat16 on TensorFlow.
        return ops.cast(self.base(shape, dtype=compute_dtype(dtype)), dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "base": keras.initializers.serialize(self.base),
            "seed": keras.saving.serialize_keras_object(self.seed),
        }

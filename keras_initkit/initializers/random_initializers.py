"""Random initializers defined per output unit: `Sparse` and `Normalized`."""

import math
import numbers

import keras
from keras import ops

from keras_initkit.initializers._utils import (
    check_seed,
    check_shape,
    compute_dtype,
    draw_seeds,
    fan_in_shape,
    float_dtype,
    positive_float,
)

# Smallest positive normal number of each dtype: stands in for a drawn value
# that rounds to exactly 0 in a half precision, so the non-zero count is exact.
_TINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126}
_TINY["float64"] = 2.0**-1022


@keras.saving.register_keras_serializable(package="keras_initkit")
class Sparse(keras.initializers.Initializer):
    """Sparse kernel: each unit has exactly `nonzero` non-zero incoming weights.

    The kernel is viewed as `(fan_in, units)`, with `fan_in = prod(shape[:-1])`
    (conv kernels included). For every output unit (column) it picks, by an
    independent random permutation, exactly `k` positions and fills them with
    draws from `N(0, stddev²)` (never exactly 0); the others are 0. `k` is
    `nonzero`, or `fan_in - round(sparsity * fan_in)` when `sparsity` (the
    fraction of zero weights) is given. With `stddev=None` the scale is
    `sqrt(1 / k)`: the variance `k * stddev²` of a unit's output per unit of
    input variance is 1, as with LeCun normal init, whatever the sparsity.

    Martens (2010) used `nonzero=15` to start deep nets (with Hessian-free
    optimization) in a regime where units are diverse and not saturated. Pass
    exactly one of `sparsity` and `nonzero`; with neither, `nonzero` is 15.

    Args:
        sparsity: Fraction of zero incoming weights per unit, in `[0, 1)`.
            Defaults to `None`.
        nonzero: Number of non-zero incoming weights per unit, an int `>= 1`
            and at most the kernel's fan-in. Defaults to `None`, which means 15
            unless `sparsity` is given.
        stddev: Standard deviation of the non-zero weights. Defaults to `None`,
            which means `sqrt(1 / k)` with `k` non-zeros per unit.
        seed: An int, a `keras.random.SeedGenerator` or None. An int gives the
            same values on every call, a `SeedGenerator` new values on every
            call, None new random values on every call. Defaults to `None`.

    ```python
    layer = keras.layers.Dense(
        512, kernel_initializer=keras_initkit.initializers.Sparse(nonzero=15)
    )
    ```

    Reference:

    - [Martens, 2010](https://www.cs.toronto.edu/~jmartens/docs/Deep_HessianFree.pdf)
    - [Sutskever et al., 2013](https://proceedings.mlr.press/v28/sutskever13.html)
    """

    def __init__(self, sparsity=None, nonzero=None, stddev=None, seed=None):
        if sparsity is not None and nonzero is not None:
            raise ValueError(
                "Pass exactly one of `sparsity` and `nonzero`. "
                f"Received: sparsity={sparsity!r}, nonzero={nonzero!r}"
            )
        if sparsity is not None and (
            isinstance(sparsity, bool)
            or not isinstance(sparsity, numbers.Real)
            or not 0 <= sparsity < 1
        ):
            raise ValueError(
                f"Argument `sparsity` must be in [0, 1). Received: sparsity={sparsity!r}"
            )
        if sparsity is None and nonzero is None:
            nonzero = 15  # Martens (2010)
        if nonzero is not None and (
            isinstance(nonzero, bool) or not isinstance(nonzero, numbers.Integral) or nonzero < 1
        ):
            raise ValueError(
                f"Argument `nonzero` must be an int >= 1. Received: nonzero={nonzero!r}"
            )
        self.sparsity = None if sparsity is None else float(sparsity)
        self.nonzero = None if nonzero is None else int(nonzero)
        self.stddev = positive_float("stddev", stddev, allow_none=True)
        self.seed = check_seed(seed)

    def __call__(self, shape, dtype=None):
        dtype = float_dtype(dtype)
        shape = check_shape("Sparse", shape, 2)
        fan_in, units = fan_in_shape(shape)
        if self.nonzero is not None:
            k, arg = self.nonzero, f"nonzero={self.nonzero}"
        else:
            k, arg = fan_in - round(self.sparsity * fan_in), f"sparsity={self.sparsity}"
        if not 1 <= k <= fan_in:
            raise ValueError(
                f"`Sparse` with {arg} needs between 1 and fan_in non-zero weights "
                f"per unit, here {k}. Received: shape={shape} with fan_in={fan_in}"
            )
        position_seed, value_seed = draw_seeds(self.seed, 2)
        work = compute_dtype(dtype)
        noise = keras.random.uniform((fan_in, units), dtype=work, seed=position_seed)
        rank = ops.argsort(ops.argsort(noise, axis=0), axis=0)  # a permutation per column
        stddev = self.stddev or math.sqrt(1.0 / k)
        values = keras.random.normal((fan_in, units), stddev=stddev, dtype=work, seed=value_seed)
        values = ops.cast(values, dtype)
        values = ops.where(ops.equal(values, 0), ops.cast(_TINY[dtype], dtype), values)
        return ops.reshape(ops.where(rank < k, values, ops.zeros_like(values)), shape)

    def get_config(self):
        return {
            **super().get_config(),
            "sparsity": self.sparsity,
            "nonzero": self.nonzero,
            "stddev": self.stddev,
            "seed": keras.saving.serialize_keras_object(self.seed),
        }


@keras.saving.register_keras_serializable(package="keras_initkit")
class Normalized(keras.initializers.Initializer):
    """Random directions: every unit's incoming weight vector has norm `gain`.

    The kernel is viewed as `(fan_in, units)`, with `fan_in = prod(shape[:-1])`
    (conv kernels included). Each column is a Gaussian vector divided by its
    L2 norm, i.e. uniform on the sphere, times `gain`. Every unit then starts
    with the same scale, which weight normalization (Salimans & Kingma, 2016)
    and cosine / normalized layers assume. Note that the entries have variance
    `gain² / fan_in`, as with LeCun normal init when `gain=1`.

    Args:
        gain: L2 norm of every unit's fan-in vector. Defaults to `1.0`.
        seed: An int, a `keras.random.SeedGenerator` or None. An int gives the
            same values on every call, a `SeedGenerator` new values on every
            call, None new random values on every call. Defaults to `None`.

    ```python
    layer = keras.layers.Dense(
        128, kernel_initializer=keras_initkit.initializers.Normalized(gain=1.0)
    )
    ```

    Reference:

    - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868)
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = positive_float("gain", gain)
        self.seed = check_seed(seed)

    def __call__(self, shape, dtype=None):
        dtype = float_dtype(dtype)
        shape = check_shape("Normalized", shape, 2)
        w = keras.random.normal(fan_in_shape(shape), dtype=compute_dtype(dtype), seed=self.seed)
        w = w * (self.gain / ops.sqrt(ops.sum(ops.square(w), axis=0, keepdims=True)))
        return ops.cast(ops.reshape(w, shape), dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "gain": self.gain,
            "seed": keras.saving.serialize_keras_object(self.seed),
        }

"""Private helpers shared by the initializers: argument checks, seeds, layouts."""

import math
import numbers

import keras
from keras import ops

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def positive_float(name, value, allow_none=False):
    """Returns `value` as a float; raises unless it is a finite number > 0."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        expected = "a finite number > 0" + (" or None" if allow_none else "")
        raise ValueError(f"Argument `{name}` must be {expected}. Received: {name}={value!r}")
    return float(value)


def check_seed(seed):
    """Validates a seed like Keras does; a config dict becomes a SeedGenerator."""
    if isinstance(seed, dict):
        seed = keras.saving.deserialize_keras_object(seed)
    if seed is None or isinstance(seed, keras.random.SeedGenerator):
        return seed
    # [0, 2**32): the int seeds every backend accepts (JAX takes a uint32).
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and 0 <= seed < 2**32:
        return int(seed)
    raise ValueError(
        "Argument `seed` must be an int in [0, 2**32), a `keras.random.SeedGenerator` "
        f"or None. Received: seed={seed!r} (of type {type(seed).__name__})"
    )


def draw_seeds(seed, n):
    """Returns `n` seeds for `n` independent draws inside one call.

    An int seed gives `n` distinct ints (the first is `seed` itself, so a
    one-draw initializer matches `keras.random` with that seed): same values
    on every call, never one int seed reused for two draws. The others are
    hashed, not `seed + i`, so they do not collide with a neighbouring user
    seed (the torch backend seeds with the sum of the two key words). A
    `SeedGenerator` advances on each draw and `None` draws from Keras' global
    generator, so both can be handed to every draw as they are.
    """
    if not isinstance(seed, int):
        return [seed] * n
    seeds = [seed]
    for i in range(1, n):
        h = (seed * 0x9E3779B1 + i * 0x85EBCA77) & 0xFFFFFFFF
        h = ((h ^ (h >> 16)) * 0x7FEB352D) & 0xFFFFFFFF
        seeds.append((h ^ (h >> 15)) & 0x7FFFFFFF)
    return seeds


def float_dtype(dtype):
    """Standardizes `dtype` (default floatx); raises unless it is a float."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"Argument `dtype` must be one of {FLOAT_DTYPES}. Received: dtype={dtype}")
    return dtype


def compute_dtype(dtype):
    """Dtype to compute in: float64 stays, half precisions compute in float32."""
    return "float64" if dtype == "float64" else "float32"


def check_shape(name, shape, min_rank, max_rank=None, hint=""):
    """Returns `shape` as a tuple of ints; raises if its rank is out of range."""
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` needs a kernel shape of known ints. Received: shape={shape!r}"
        ) from None
    if any(d < 0 for d in shape):
        raise ValueError(f"`{name}` needs non-negative dimensions. Received: shape={shape}")
    if len(shape) < min_rank or (max_rank is not None and len(shape) > max_rank):
        ranks = f"{min_rank} to {max_rank}" if max_rank else f"at least {min_rank}"
        raise ValueError(
            f"`{name}` needs a kernel of rank {ranks}.{hint} "
            f"Received: shape={shape} of rank {len(shape)}"
        )
    return shape


def fan_in_shape(shape):
    """Flattens a kernel to `(fan_in, units)`: one column per output unit."""
    return math.prod(shape[:-1]), shape[-1]


def centre_tap(matrix, shape):
    """Places an `(in, out)` matrix at the centre tap of a kernel, zeros elsewhere.

    The centre of a spatial axis of size `k` is `(k - 1) // 2`: the tap that
    `padding="same"` aligns with the output position (Keras pads the extra
    element of an even kernel at the end), so the conv is the matrix applied
    pointwise. A rank-2 `shape` returns the matrix itself.
    """
    spatial = shape[:-2]
    if not spatial:
        return matrix
    if 0 in spatial:  # no taps at all (one_hot into 0 classes fails on torch)
        return ops.zeros(shape, dtype=matrix.dtype)
    index = 0
    for k in spatial:  # row-major flat index of the centre tap
        index = index * k + (k - 1) // 2
    delta = ops.one_hot(index, math.prod(spatial), dtype=matrix.dtype)
    return ops.reshape(delta, spatial + (1, 1)) * matrix

"""Eager defaults of the backend interface (see `keras_initkit.probe.backend`)."""

import contextlib

import keras

EAGER_CALLS = GRADIENT_EAGER_CALLS = None  # no compiler: all runs eagerly (see `Lazy`)
# `lsuv_init`'s pass runs eagerly: one call, where tracing costs more than it saves
# (EfficientNetB0 at 32x32, batch 32: TensorFlow 0.4-0.45 s eagerly, torch 0.1-0.2 s).
COMPILES_LSUV = False
# Keras' torch batch norm computes E[x^2] - E[x]^2 (one pass, cancels when the mean is
# large): the probe computes its own two-pass moments instead of reusing the layer's.
REUSES_BATCH_MOMENTS = False


def compile_function(fn, model):
    """No compiler: `fn` runs eagerly (it reads the variables on every call)."""
    return fn


def compile_arrays(fn):
    """Eager ops cost little here: `fn` itself."""
    return fn


def to_numpy(x):
    """`keras.ops.convert_to_numpy`, a Variable read through its value (JAX, NumPy)."""
    return keras.ops.convert_to_numpy(x.value if isinstance(x, keras.Variable) else x)


def on_host(x):
    return True  # NumPy, and backends we know nothing of: converted where they are


def value_and_grad(loss_of, model, variables):
    raise NotImplementedError(
        "Gradient statistics support the TensorFlow, JAX and torch backends only. "
        f"Received: backend='{keras.backend.backend()}'"
    )


def no_grad():
    return contextlib.nullcontext()


def eager_pass():
    """A context around a pass this package runs eagerly (see the TensorFlow module's)."""
    return contextlib.nullcontext()


def run_after(fn, after, *args):
    """Eager code runs in program order and frees as it goes: nothing to chain."""
    return fn(*args)


def identity(x):
    return x


def scope():
    """Eager code has no nested graphs: one scope."""
    return None


def histogram(a, low, high, bins):
    """Counts by `segment_sum` with a static segment count (a static shape when traced)."""
    index = keras.ops.floor((a - low) * (bins / (high - low)))
    flat = keras.ops.reshape(keras.ops.cast(keras.ops.clip(index, 0, bins - 1), "int32"), (-1,))
    ones = keras.ops.ones_like(flat, dtype="float32")
    return keras.ops.segment_sum(ones, flat, num_segments=bins)


def preserving_rng():
    """A context that leaves the backend's global random state as it found it (Keras'
    own random ops draw from SeedGenerators, which `discarding_updates` covers)."""
    return contextlib.nullcontext()


def discarding_updates(model):
    """A scope in which variable assignments (moving statistics, seed generators,
    metrics) are recorded instead of made, and dropped when it closes."""
    return keras.StatelessScope()


def squared_norms(tensors):
    """`(len(tensors),)` float32: the squared L2 norm of each tensor."""
    return keras.ops.stack(
        [keras.ops.sum(keras.ops.square(keras.ops.cast(t, "float32"))) for t in tensors]
    )


def plogp(p):
    """`p · log p` elementwise for probabilities `p`, 0 where `p` is 0."""
    return p * keras.ops.log(keras.ops.maximum(p, 1e-30))


def positive_rate(x, channel_axis):
    """`(channels,)` float32: the share of `x`'s values > 0 in each channel."""
    fired = keras.ops.cast(keras.ops.cast(x, "float32") > 0, "float32")
    axis = channel_axis % len(x.shape)
    return keras.ops.mean(fired, axis=tuple(i for i in range(len(x.shape)) if i != axis))


def moments(x, axes):
    """`(mean, variance)` over `axes` in float32, two-pass, the variance biased."""
    x = keras.ops.cast(x, "float32")
    axes = tuple(sorted(a % len(x.shape) for a in axes))
    if axes == tuple(range(len(axes))):  # leading axes: the mean broadcasts as it is
        mean = keras.ops.mean(x, axis=axes)
        return mean, keras.ops.mean(keras.ops.square(x - mean), axis=axes)
    mean = keras.ops.mean(x, axis=axes, keepdims=True)
    var = keras.ops.mean(keras.ops.square(x - mean), axis=axes)
    return keras.ops.squeeze(mean, axis=axes), var

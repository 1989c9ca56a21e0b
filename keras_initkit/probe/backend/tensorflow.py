"""TensorFlow: `tf.function` tracing, a gradient tape, control dependencies."""

import contextlib
import logging
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_initkit.probe.backend import Lazy, generic
from keras_initkit.probe.backend.generic import (  # noqa: F401
    COMPILES_LSUV,
    compile_arrays,
    discarding_updates,
    no_grad,
    preserving_rng,
)

# Tracing and first running ResNet50's forward probe (32x32, batch 32) costs 1.2-1.4 s,
# about what `predict`'s first call costs (1.0-1.2 s), and a compiled call costs a
# third of an eager one (0.16 s against 0.45 s): compile at once, so a second
# `diagnose` reuses the trace. Its gradient step costs 3.2 s traced (0.55 s a call
# after), 1.1-1.3 s eagerly: run it eagerly until that has cost about one trace (see
# `Lazy`; the break-even is 3-4 calls).
EAGER_CALLS = 0
GRADIENT_EAGER_CALLS = 4
# Keras' batch-norm moments are two-pass here, as the probe's (`moments`): it reuses them.
REUSES_BATCH_MOMENTS = True


def _call_options():
    """Function call options that skip Grappler on a machine without a GPU, or None.

    TensorFlow optimizes a function's graph with Grappler on its first call. For a
    probe that pass costs about as much as running it ten times (ResNet50's forward
    probe, 4,500 ops: 1.0 s first run with it, 0.6 s without; its gradient step 2.3 s
    against 1.3 s), and on the CPU it buys nothing measurable in the steady state
    (0.104 s per update either way): our graphs are the model's ops plus reductions
    Grappler cannot fuse. On a GPU its layout pass (NHWC convolutions to NCHW) pays,
    so there the defaults stay. The options are the thread's own
    (`context.function_call_options`, not public: `tf.config.optimizer` would change
    every function of the process), set only around our calls.
    """
    if tf.config.list_logical_devices("GPU"):
        return None
    try:
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.eager import context

        current = context.context().function_call_options
        config = config_pb2.ConfigProto.FromString(current.config_proto_serialized)
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        return context.FunctionCallOptions(current.executor_type, config)
    except (ImportError, AttributeError):  # a TensorFlow without them: its defaults
        return None


@contextlib.contextmanager
def _calling_with(options):
    """`options` as this thread's function call options while the block runs."""
    if options is None:
        yield
        return
    from tensorflow.python.eager import context

    ctx = context.context()
    saved = ctx.function_call_options
    ctx.function_call_options = options
    try:
        yield
    finally:
        ctx.function_call_options = saved


def compile_function(fn, model):
    """A `tf.function` of `fn`, its ConcreteFunction per input signature called directly.

    tf.function's own dispatch costs ~1-2 ms of Python per call, as much as a small
    model's whole probe pass. The stateful model's variables are captured by
    reference, so later weight updates are read without retracing. Traced without
    AutoGraph: converting every function the pass calls (ours and Keras') doubled
    the tracing time of ResNet50, and Keras' own `predict` and `fit` do not convert
    layer code either (a layer branching on a tensor in Python fails there too).
    Called without Grappler where that is cheaper (see `_call_options`).
    """
    traced = tf.function(fn, reduce_retracing=True, autograph=False)
    concrete = {}
    options = _call_options()

    def call(*args):
        key = tuple((tuple(t.shape), t.dtype) for t in tf.nest.flatten(args))
        if key not in concrete:
            concrete[key] = traced.get_concrete_function(*args)
        with _calling_with(options):
            return concrete[key](*args)

    return call


class _GroupedConvolutionRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about Keras' grouped
    convolution (`conv.<locals>._conv_xla`): eagerly, Keras builds a new `tf.function`
    for it at every call, so an eager pass over a model with five such layers
    (ConvNeXt's depthwise convolutions) warns of "excessive retracing" in code the
    user neither wrote nor called."""

    def filter(self, record):
        message = record.getMessage()
        return not ("tf.function retracing" in message and "._conv_xla" in message)


@contextlib.contextmanager
def eager_pass():
    """A context around a pass this package runs eagerly (`lsuv_init`'s, a gradient
    step before it is compiled): TensorFlow's retracing warning about Keras' grouped
    convolutions is dropped while it runs (see `_GroupedConvolutionRetracing`)."""
    logger, quiet = tf.get_logger(), _GroupedConvolutionRetracing()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def to_numpy(x):
    """A Keras Variable through `tf.Variable.numpy` (NumPy warns converting it), copied:
    the array must not follow the variable's later updates."""
    if isinstance(x, keras.Variable):
        return np.array(x.value.numpy())
    return keras.ops.convert_to_numpy(x)


def on_host(x):
    device = getattr(x, "value", x).device  # a Keras variable: its tf.Variable's device
    return device == "" or "device:CPU" in device


def value_and_grad(loss_of, model, variables):
    def step(x, y):
        with tf.GradientTape() as tape:
            # Each variable mapped to its own value read under the tape: regularizers
            # read mapped values inside the StatelessScope.
            mapping = [(v, v.value) for v in variables]
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                loss, aux = loss_of(x, y)
        # With respect to the tf.Variables: the zeros of an unconnected one (a weight the
        # loss never reads) take the source's dtype, a string on a Keras Variable.
        sources = [value for _, value in mapping]
        grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # An embedding's gradient comes as IndexedSlices: make every gradient dense.
        return loss, [tf.convert_to_tensor(g) for g in grads], aux

    return Lazy(step, lambda: compile_function(step, model), "GRADIENT_EAGER_CALLS")


def run_after(fn, after, *args):
    """`fn(*args)` with its ops made to wait for `after` (inside a traced graph).

    TensorFlow's executor runs the forward chain ahead of the reductions that hang off
    it, and independent reductions side by side, so every layer's activation and every
    reduction's full-size temporaries would be alive at once. Ordering the probe's
    steps (`engine.Lag`) keeps its peak memory near that of the forward pass.
    """
    after = [t for t in after if keras.ops.is_tensor(t)]
    if not after or tf.executing_eagerly():
        return fn(*args)
    with tf.control_dependencies(after):
        return fn(*args)


def identity(x):
    return tf.identity(x) if keras.ops.is_tensor(x) else x


def scope():
    """The graph being built (a `tf.cond` branch or a `tf.while_loop` body has its own);
    None eagerly, where `tf.cond` runs the taken branch as ordinary eager code."""
    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


def histogram(a, low, high, bins):
    """One fused op (index and count); ~6x faster on CPU than `segment_sum`. It rejects
    NaN ("Histogram values must not contain NaN": a diverged network crashed `fit`
    under a monitor), so NaN counts in the lowest bin; such a layer's saturation is not
    judged (`checks.activations.NON_FINITE`)."""
    a = tf.where(tf.math.is_nan(a), tf.cast(low, a.dtype), a)
    return tf.cast(tf.histogram_fixed_width(a, [low, high], nbins=bins), "float32")


def squared_norms(tensors):
    """One fused op per tensor (`l2_loss` = sum of squares / 2) instead of two."""
    return 2.0 * tf.stack([tf.nn.l2_loss(tf.cast(t, "float32")) for t in tensors])


def plogp(p):
    """One fused op (`xlogy`) instead of three (maximum, log, multiply)."""
    return tf.math.xlogy(p, p)


def positive_rate(x, channel_axis):
    """Channels last: the indicator's column means as one matrix-vector product, ~1.5x
    faster on CPU than `Mean` over the leading axes (0.65 ms less per call on a
    (32, 64, 512) feed-forward activation); otherwise `Mean` over the other axes.
    With a static row count the weights are one constant: five ops, against ten that
    compute them at run time (a traced probe's first call costs per op). The reshape
    stays even for a (batch, units) input: without it an MLP's probe update ran 0.3-0.4
    ms (5%) slower, though the op alone is not."""
    channels = x.shape[-1]
    if channel_axis % x.shape.rank != x.shape.rank - 1 or channels is None:
        return generic.positive_rate(x, channel_axis)
    fired = tf.cast(tf.reshape(x, (-1, channels)) > 0, tf.float32)
    rows = fired.shape[0]
    if rows is None:
        rows = tf.shape(fired)[0]
        weights = tf.fill([rows, 1], 1.0 / tf.cast(rows, tf.float32))
    else:
        weights = tf.constant(1.0 / rows, tf.float32, shape=(rows, 1))
    return tf.reshape(tf.matmul(fired, weights, transpose_a=True), (channels,))


_AXES = weakref.WeakKeyDictionary()  # graph -> {axes: its constant}


def _axes(axes):
    """`axes` as one constant per traced graph (each reduction would make its own: a
    third of the Const ops in ResNet50's probe); eagerly, the tuple itself."""
    if tf.executing_eagerly():
        return axes
    constants = _AXES.setdefault(tf.compat.v1.get_default_graph(), {})
    if axes not in constants:
        constants[axes] = tf.constant(axes, tf.int32)
    return constants[axes]


def moments(x, axes):
    """Two-pass moments in three ops (Mean, SquaredDifference, Mean) and a shared axes
    constant, against seven through `keras.ops` and a stack.

    A one-pass form (Sum and `l2_loss`, two reads and no temporary, with a `Switch` to
    the two-pass form where digits would cancel) saved 2.3 ms of a Transformer's 65 ms
    probe update, but its 15 ops per site against 3 made the probe's first call
    0.13-0.16 s (a third) slower: tracing and first runs cost per op.
    """
    x = tf.cast(x, tf.float32)
    axes = tuple(sorted(a % x.shape.rank for a in axes))
    reduce = _axes(axes)
    if axes == tuple(range(len(axes))):  # leading axes: the mean broadcasts as it is
        mean = tf.reduce_mean(x, reduce)
        return mean, tf.reduce_mean(tf.math.squared_difference(x, mean), reduce)
    mean = tf.reduce_mean(x, reduce, keepdims=True)
    return tf.squeeze(mean, axes), tf.reduce_mean(tf.math.squared_difference(x, mean), reduce)

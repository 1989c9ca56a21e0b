"""JAX: `jax.jit` of a stateless pass fed with the variables' current values."""

import jax
import keras
from jax.extend.core import get_opaque_trace_state

from keras_initkit.probe.backend import Lazy
from keras_initkit.probe.backend.generic import (  # noqa: F401
    eager_pass,
    histogram,
    identity,
    moments,
    no_grad,
    plogp,
    positive_rate,
    preserving_rng,
    run_after,
    squared_norms,
    to_numpy,
)

# Eager JAX compiles every primitive for every new shape: ResNet50's first eager forward
# pass took 5.3 s, its gradient 19 s (predict's first call: 1.15 s). Compile at once.
EAGER_CALLS = GRADIENT_EAGER_CALLS = 0
# `lsuv_init`'s pass, compiled: eagerly, EfficientNetB0's first call in a process took
# 28-34 s (about half of it the model's own eager ops), compiled 6-11 s (docs/lsuv.md).
COMPILES_LSUV = True
# Keras' batch-norm moments are two-pass here (`jnp.var`), as the probe's: it reuses them.
REUSES_BATCH_MOMENTS = True


def compile_function(fn, model):
    """`jax.jit` over `fn` run in a `keras.StatelessScope` mapping every model variable
    to a traced argument: later weight updates are seen without retracing, and no
    state update escapes (XLA plans its own buffers, so no chaining is needed)."""
    variables = list(model.variables)

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)
    return lambda *args: jitted([v.value for v in variables], *args)


def compile_arrays(fn):
    """`jax.jit(fn)`. Eagerly every op compiles for every new shape: the symmetry
    fingerprints of ResNet50's 53 kernels took 3.8 s eagerly on their first call."""
    return jax.jit(fn)


def on_host(x):
    return all(device.platform == "cpu" for device in x.devices())


def value_and_grad(loss_of, model, variables):
    trainable = {id(v) for v in variables}
    others = [v for v in model.variables if id(v) not in trainable]

    def loss(values, other_values, x, y):
        mapping = list(zip(variables, values)) + list(zip(others, other_values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            return loss_of(x, y)

    def caller(fn):
        return lambda x, y: fn([v.value for v in variables], [v.value for v in others], x, y)

    def step(*args):
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(*args)
        return value, grads, aux

    return Lazy(caller(step), lambda: caller(jax.jit(step)), "GRADIENT_EAGER_CALLS")


def scope():
    """The current trace: `lax.cond` branches and loop bodies are traced apart (their
    tracers must not leave them), also outside `jax.jit`."""
    return get_opaque_trace_state()


def discarding_updates(model):
    """A scope that drops assignments; it maps every variable to its current value, so
    inside a jitted pass (already a scope of traced values) reads stay traced."""
    return keras.StatelessScope(state_mapping=[(v, v.value) for v in model.variables])

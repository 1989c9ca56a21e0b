"""The probe's backend code: one module per Keras backend behind one small interface.

Like `keras/src/backend/<name>/`, each module implements the same functions and the
rest of the package never asks which backend it runs on:

- `compile_function(fn, model)`: `fn(*args)` compiled once per input signature, reading
  the model's variables at call time (later weight updates are seen without a retrace).
- `value_and_grad(loss_of, model, variables)`: `step(x, y) -> (loss, grads)`, the
  gradient of `loss_of(x, y)` (run in a `keras.StatelessScope` that collects losses)
  with respect to `variables`, leaving every variable untouched.
- `no_grad()`: a context in which eager forward passes record no gradients.
- `discarding_updates(model)`: a scope in which variable assignments are recorded and
  dropped (a probe in training mode changes no moving statistic or seed state).
- `preserving_rng()`: a context that restores the backend's global random state
  (torch's global generator, which Keras' unseeded torch dropout draws from).
- `run_after(fn, after, *args)`: `fn(*args)` whose ops wait for the tensors `after`
  (bounds the peak memory of a traced pass).
- `identity(x)`: a graph node standing for `x` (for `run_after` chains).
- `histogram(a, low, high, bins)`: float32 counts of `a` in `bins` equal bins of
  `[low, high]` (values outside go to the end bins).

`generic` holds the eager defaults (torch, NumPy and any other backend); the
TensorFlow and JAX modules override what they compile. This package and the
TensorBoard writer (`keras_initkit.summary`) are the only places that import
TensorFlow.
"""

import importlib

import keras

_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


_LOADED = {}


def current():
    """The backend module for `keras.backend.backend()` (`generic` for others)."""
    backend = keras.backend.backend()
    if backend not in _LOADED:
        name = _MODULES.get(backend, "generic")
        _LOADED[backend] = importlib.import_module(f"{__name__}.{name}")
    return _LOADED[backend]

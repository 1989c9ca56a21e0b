"""The probe's backend code: one module per Keras backend behind one small interface.

Like `keras/src/backend/<name>/`, each module implements the same functions and the
rest of the package never asks which backend it runs on:

- `compile_function(fn, model)`: `fn(*args)` compiled once per input signature, reading
  the model's variables at call time (later weight updates are seen without a retrace).
- `compile_arrays(fn)`: `fn(*arrays)` (no model state) for repeated calls: compiled once
  per input signature where eager ops are compiled one by one (JAX), else `fn` itself.
- `on_host(x)`: whether the tensor `x` lives in host memory (a CPU device), where NumPy
  reads it without a transfer.
- `value_and_grad(loss_of, model, variables)`: a `Lazy`
  `step(x, y) -> (loss, grads, aux)`, the gradient of the loss of
  `loss_of(x, y) -> (loss, aux)` (run in a `keras.StatelessScope` that collects
  losses) with respect to `variables`, leaving every variable untouched; `aux` is a
  tensor computed beside the loss (the forward statistics of a fused pass).
- `EAGER_CALLS`: how many eager calls of a forward probe cost about one trace (see
  `Lazy`); 0 where every probe is compiled before its first call, None without a
  compiler. `GRADIENT_EAGER_CALLS`: the same for a gradient step.
- `COMPILES_LSUV`: True where `lsuv_init`'s calibration pass is compiled as one function
  (JAX); elsewhere it runs eagerly, where it is already cheap.
- `REUSES_BATCH_MOMENTS`: True where Keras' batch norm computes its batch moments in
  two passes, as `moments` does, so a probe reuses them (see `probe.Reducer`).
- `moments(x, axes)`: `(mean, variance)` over `axes` in float32, the variance biased and
  exact to float32 rounding (two passes; torch's `var` over every axis of a large tensor).
- `plogp(p)`: `p · log p` elementwise for probabilities, 0 where `p` is 0.
- `positive_rate(x, channel_axis)`: float32, the share of values > 0 in each channel.
- `no_grad()`: a context in which eager forward passes record no gradients.
- `eager_pass()`: a context around a pass run eagerly where it could be compiled
  (TensorFlow: it drops the retracing warning Keras' grouped convolutions raise there).
- `discarding_updates(model)`: a scope in which variable assignments are recorded and
  dropped (a probe in training mode changes no moving statistic or seed state).
- `preserving_rng()`: a context that restores the backend's global random state
  (torch's global generator, which Keras' unseeded torch dropout draws from).
- `run_after(fn, after, *args)`: `fn(*args)` whose ops wait for the tensors `after`
  (bounds the peak memory of a traced pass).
- `identity(x)`: a graph node standing for `x` (for `run_after` chains).
- `scope()`: a token of where ops are being built, equal for ops of one traced function
  and different inside a control-flow branch or loop body traced within it (whose tensors
  cannot leave it); constant where nothing is traced.
- `squared_norms(tensors)`: a float32 vector, the squared L2 norm of each tensor.
- `histogram(a, low, high, bins)`: float32 counts of `a` in `bins` equal bins of
  `[low, high]` (values outside go to the end bins).
- `to_numpy(x)`: a tensor or Keras Variable as a NumPy array (see the module's `to_numpy`).

`generic` holds the eager defaults (torch, NumPy and any other backend); the
TensorFlow and JAX modules override what they compile. This package and the
TensorBoard writer (`keras_initkit.summary`) are the only places that import
TensorFlow.
"""

import importlib

import keras

_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


class Lazy:
    """`fn` run eagerly while that costs less than compiling it, then `compile()`'s.

    A function runs eagerly until the calls made plus the calls announced
    (`upcoming`: the batches of this run; `planned`: the call count its owner expects
    to reach, as a monitor's updates over its fit) exceed the backend's limit (how
    many eager calls cost about one trace and first compiled run), and is compiled
    from then on: one called now and then costs at most about twice the better
    choice in hindsight (the ski-rental rule). TensorFlow, ResNet50 at 32x32, batch
    32: a forward probe traces and first runs in 1.1-1.4 s, about `predict`'s first
    call, so it compiles at once (limit 0) and a second `diagnose` reuses it; a
    gradient step costs 3.5 s traced against 0.8-0.9 s eagerly (limit 4).

    Args:
        fn: the function run eagerly.
        compile: a no-argument callable returning the compiled `fn`; None: never
            compile (`fn` is compiled already, or eager by request).
        limit: the backend module's attribute holding how many eager calls cost one
            trace: `"EAGER_CALLS"` (a forward probe) or `"GRADIENT_EAGER_CALLS"`.
    """

    def __init__(self, fn, compile=None, limit="EAGER_CALLS"):
        self.fn, self._compile, self._limit = fn, compile, limit
        self.calls, self.planned, self.compiled = 0, 0, None

    def __call__(self, *args, upcoming=1):
        limit = getattr(current(), self._limit)
        if self.compiled is None and self._compile is not None and limit is not None:
            if max(self.calls + upcoming, self.planned) > limit:
                self.compiled = self._compile()
        self.calls += 1
        if self.compiled is not None:
            return self.compiled(*args)
        with current().eager_pass():
            return self.fn(*args)


_LOADED = {}


def to_numpy(x):
    """`keras.ops.convert_to_numpy(x)` without NumPy 2's DeprecationWarning ("`__array__`
    implementation doesn't accept a copy keyword"), which Keras Variables (TensorFlow,
    torch) and torch tensors raise on every conversion: 600 per `diagnose(model, x, y)`
    on NASNetMobile, shown under pytest and `-W default`."""
    return current().to_numpy(x)


def current():
    """The backend module for `keras.backend.backend()` (`generic` for others)."""
    backend = keras.backend.backend()
    if backend not in _LOADED:
        name = _MODULES.get(backend, "generic")
        _LOADED[backend] = importlib.import_module(f"{__name__}.{name}")
    return _LOADED[backend]

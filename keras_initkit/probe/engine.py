"""The probe: one forward pass, per-layer reductions on device, one host transfer.

A `Probe` owns a model and a list of `Reducer`s. Each reducer says which layers it
applies to, what it computes on device from a layer's input, pre-activation and output
(small tensors only: moments, fractions, per-unit rates), how per-batch values merge,
and how the merged values become reported metrics. The probe intercepts the selected
layers during a `training=False` forward pass, packs every reduction into one float32
vector, and brings that vector to the host once per call. On TensorFlow the pass is a
`tf.function`, on JAX a `jax.jit` function, traced once per input signature; on other
backends it runs eagerly.

Rules worth knowing:
- A layer called several times in one forward pass (a shared layer) is measured on
  its first call; later calls run unchanged.
- The pass runs with `training=False`: batch-norm moving statistics are not updated,
  dropout draws no random numbers, no optimizer state is read or written.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_initkit.probe.data import as_batches, check_positive_int
from keras_initkit.probe.intercept import call_split, intercept, no_grad
from keras_initkit.probe.selection import make_sites, resolve_layers


class Reducer:
    """A family of statistics the probe computes on device, per selected layer.

    Subclasses set `name` and `merge` and override `applies`, `reduce` and
    `finalize`. `merge` maps each stat `reduce` returns to how per-batch values
    combine: `"mean"` (sample-weighted mean), `"max"`, `"min"`, `"last"`,
    `"moments"` (a `(2, ...)` stack of mean and biased variance, pooled exactly), or
    `"sample"` (values concatenated). A reducer that reads only the layer's input
    sets `needs = "inputs"`: it then runs before the layer (with `pre` and
    `outputs` None), which keeps the probe's peak memory low.
    """

    name = "reducer"
    merge = {}
    needs = "outputs"

    def applies(self, site):
        return True

    def reduce(self, site, inputs, pre, outputs):
        """Device-side statistics of one batch: a dict of small float tensors."""
        raise NotImplementedError

    def finalize(self, site, stats):
        """Host-side metrics from merged NumPy `stats`: a dict `metric -> value`.

        Return only metrics that can be computed: absent means not judged.
        """
        raise NotImplementedError


def moments(x, axes):
    """Mean and biased variance over `axes`, two-pass for accuracy, stacked."""
    x = keras.ops.cast(x, "float32")
    mean = keras.ops.mean(x, axis=axes, keepdims=True)
    var = keras.ops.mean(keras.ops.square(x - mean), axis=axes)
    return keras.ops.stack([keras.ops.squeeze(mean, axis=axes), var])


def _merge(kind, values, weights):
    values = np.stack(values)
    if kind == "mean":
        w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
        return (values * w).sum(axis=0) / weights.sum()
    if kind == "max":
        return values.max(axis=0)
    if kind == "min":
        return values.min(axis=0)
    if kind == "last":
        return values[-1]
    if kind == "sample":
        return values.reshape((-1,) + values.shape[2:])
    if kind == "moments":
        w = (weights / weights.sum()).reshape((-1,) + (1,) * (values.ndim - 2))
        means, variances = values[:, 0], values[:, 1]
        mean = (w * means).sum(axis=0)
        var = (w * (variances + (means - mean) ** 2)).sum(axis=0)
        return np.stack([mean, var])
    raise ValueError(f"Unknown merge kind. Received: {kind!r}")


def _serial(fn, after, *args):
    """`fn(*args)`, its ops made to wait for the tensors `after` (TensorFlow graphs).

    TensorFlow's executor runs the forward chain ahead of the reductions that hang
    off it, and independent reductions side by side, so every layer's activation and
    every reduction's full-size temporaries would be alive at once. The probe chains
    its steps instead (a layer's input reductions, the layer, its output reductions,
    the next layer): its peak memory stays about that of the forward pass plus one
    reduction's temporary. XLA (JAX) plans its own buffers; eager code frees as it goes.
    """
    after = [t for t in after if keras.ops.is_tensor(t)]
    if not after or keras.backend.backend() != "tensorflow":
        return fn(*args)
    import tensorflow as tf

    if tf.executing_eagerly():
        return fn(*args)
    with tf.control_dependencies(after):
        return fn(*args)


# Chain a layer's steps (see `_serial`) when its input or output holds at least this
# many values (64 KiB of float32). Below that, reductions are dispatch-bound, running
# them beside the forward pass is faster (a 20-layer MLP's per-batch probe of 64
# samples: ~20% less CPU), and keeping such activations alive costs next to nothing.
CHAIN_MIN_SIZE = 2**14


def _large(tensors):
    """True when a tensor in `tensors` may hold CHAIN_MIN_SIZE values (unknown: yes)."""
    for t in keras.tree.flatten(tensors):
        shape = tuple(t.shape) if keras.ops.is_tensor(t) else ()
        if shape and (None in shape or math.prod(shape) >= CHAIN_MIN_SIZE):
            return True
    return False


def _identity(x):
    if keras.backend.backend() == "tensorflow" and keras.ops.is_tensor(x):
        import tensorflow as tf

        return tf.identity(x)
    return x


@dataclasses.dataclass
class ProbeResult:
    """What one probe run measured.

    Attributes:
        sites: the measured `Site`s in forward (first-call) order.
        metrics: `site name -> {metric name -> float or np.ndarray}`.
        source: which data was used, e.g. `"512 samples in 1 batch(es)"`.
    """

    sites: list
    metrics: dict
    source: str

    def metric(self, name):
        """`{site name: value}` for one metric, for the sites that report it."""
        return {s: m[name] for s, m in self.metrics.items() if name in m}


class Probe:
    """Run `model` on probe data and collect each reducer's metrics per layer.

    Args:
        model: a built Keras model (Sequential, Functional, nested or subclassed).
        reducers: the `Reducer`s to compute, all in the same forward pass.
        layers: layer names or objects to watch; None for every layer some reducer
            applies to.
        batch_size: split array data into chunks of this many samples; None runs
            all samples at once.
        compile: trace the pass into one compiled function (TensorFlow and JAX);
            otherwise run eagerly.
    """

    def __init__(self, model, reducers, *, layers=None, batch_size=None, compile=True):
        check_positive_int(batch_size, "batch_size")
        self.model = model
        self.reducers = list(reducers)
        self.batch_size = batch_size
        chosen = resolve_layers(model, layers)
        sites = make_sites(model, chosen)
        self._plan = {
            id(site.layer): (site, [r for r in self.reducers if r.applies(site)]) for site in sites
        }
        if layers is None:
            self._plan = {k: v for k, v in self._plan.items() if v[1]}
        self._layout = None
        self._order = None
        self._compile = compile
        self._fn = None

    @property
    def sites(self):
        """The watched sites (forward order once the probe has run)."""
        sites = [site for site, _ in self._plan.values()]
        if self._order is not None:
            rank = {name: i for i, name in enumerate(self._order)}
            sites.sort(key=lambda s: rank.get(s.name, len(rank)))
        return sites

    def _forward(self, x):
        """One intercepted forward pass; returns the flat float32 stats vector."""
        collected, order = {}, []

        def hook(layer, call, args, kwargs):
            site, reducers = self._plan[id(layer)]
            if site.name in collected:  # shared layer: measured on its first call
                return call(*args, **kwargs)
            inputs = args[0] if args else next(iter(kwargs.values()))
            # A large layer's steps run one after the other (see `_serial`): reductions
            # of its input, the layer, reductions of its output, then the next layer.
            stats, last = {}, []
            chain = _large(inputs)
            for r in reducers:
                if r.needs == "inputs":
                    stats[r.name] = _serial(r.reduce, last, site, inputs, None, None)
                    last = keras.tree.flatten(stats[r.name]) if chain else []
            pre, out = _serial(call_split, last, layer, call, args, kwargs)
            chain = chain or _large(out)
            last = keras.tree.flatten(out) if chain else []
            for r in reducers:
                if r.needs != "inputs":
                    stats[r.name] = _serial(r.reduce, last, site, inputs, pre, out)
                    last = keras.tree.flatten(stats[r.name]) if chain else []
            collected[site.name] = {r.name: stats[r.name] for r in reducers}
            order.append(site.name)
            if not chain:
                return out
            return _serial(keras.tree.map_structure, last, _identity, out)

        layers = [site.layer for site, _ in self._plan.values()]
        with intercept(layers, hook), no_grad():
            self.model(x, training=False)
        keys = [
            (site, reducer, stat)
            for site, by_reducer in collected.items()
            for reducer, stats in by_reducer.items()
            for stat in stats
        ]
        leaves = [collected[s][r][k] for s, r, k in keys]
        self._layout = [(key, tuple(t.shape)) for key, t in zip(keys, leaves)]
        for key, shape in self._layout:
            if any(d is None for d in shape):
                raise ValueError(
                    "A reducer must return tensors of static shape (reshape them). "
                    f"Received: shape {shape} for {'/'.join(key)}"
                )
        self._order = order
        if not leaves:
            return keras.ops.zeros((0,), "float32")
        return keras.ops.concatenate(
            [keras.ops.reshape(keras.ops.cast(t, "float32"), (-1,)) for t in leaves]
        )

    def _function(self):
        """The forward pass, compiled once per input signature where the backend can.

        TensorFlow: a `tf.function` over the stateful model. JAX: `jax.jit` over the
        pass run in a `keras.StatelessScope` fed with the variables' current values,
        so later weight updates are seen without retracing. Other backends: eager.
        """
        if self._fn is not None:
            return self._fn
        backend = keras.backend.backend()
        if self._compile and backend == "tensorflow":
            import tensorflow as tf

            traced = tf.function(self._forward, reduce_retracing=True)
            concrete = {}

            def call(x):
                # A traced ConcreteFunction per input signature, called directly:
                # tf.function's own dispatch costs ~1-2 ms of Python per call, as
                # much as a small model's whole probe pass.
                key = tuple((tuple(t.shape), t.dtype) for t in keras.tree.flatten(x))
                if key not in concrete:
                    concrete[key] = traced.get_concrete_function(x)
                return concrete[key](x)

            self._fn = call
        elif self._compile and backend == "jax":
            import jax

            variables = list(self.model.variables)

            def stateless(values, x):
                with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                    return self._forward(x)

            jitted = jax.jit(stateless)
            self._fn = lambda x: jitted([v.value for v in variables], x)
        else:
            self._fn = self._forward
        return self._fn

    def _unpack(self, vector):
        """Flat vector -> {site: {reducer: {stat: array}}}, by the traced layout."""
        out, start = {}, 0
        for (site, reducer, stat), shape in self._layout:
            size = math.prod(shape)
            value = vector[start : start + size].reshape(shape)
            out.setdefault(site, {}).setdefault(reducer, {})[stat] = value
            start += size
        return out

    def run(self, data, *, max_batches=None, argument="data"):
        """Probe `data` and return a `ProbeResult`.

        Data is validated (finite, non-empty, consistent) before the model sees it.
        """
        batches, source = as_batches(
            data, batch_size=self.batch_size, max_batches=max_batches, argument=argument
        )
        return self.run_batches(batches, source)

    def run_batches(self, batches, source=""):
        """Probe already validated `(x, y)` host batches (see `data.as_batches`)."""
        fn = self._function()
        vectors, weights = [], []
        for x, _ in batches:
            vectors.append(fn(x))
            weights.append(keras.tree.flatten(x)[0].shape[0])
        # The one host transfer of this run.
        if len(vectors) == 1:
            host = keras.ops.convert_to_numpy(vectors[0])[None]
        else:
            host = keras.ops.convert_to_numpy(keras.ops.stack(vectors))
        per_batch = [self._unpack(row) for row in host.astype(np.float64)]
        weights = np.asarray(weights, dtype=np.float64)
        metrics = {}
        for site in self.sites:
            if site.name not in per_batch[0]:
                continue  # never called in this forward pass
            _, reducers = self._plan[id(site.layer)]
            values = {}
            for r in reducers:
                merged = per_batch[0][site.name][r.name]
                if len(per_batch) > 1:  # one batch: its values are the merged values
                    merged = {
                        stat: _merge(
                            r.merge[stat], [b[site.name][r.name][stat] for b in per_batch], weights
                        )
                        for stat in merged
                    }
                values.update(r.finalize(site, merged))
            metrics[site.name] = values
        return ProbeResult(self.sites, metrics, source)

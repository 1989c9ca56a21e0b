"""The probe engine: run a model on probe data, per-layer statistics on device, one transfer.

Every data-dependent feature runs on one `Runner`: it compiles its statistics function
once per input signature through the backend module (`probe.backend`), packs every
statistic into one float32 vector, brings the vectors of all batches to the host in one
transfer, and pools per-batch values exactly. Two runners exist:

- `Probe` (here): forward statistics. It intercepts the selected layers during one
  forward pass and hands each layer's input, pre-activation and output to its
  `Reducer`s (moments, saturation, dead units, batch-norm statistics, ...).
- `GradientProbe` (`probe.gradients`): per-layer gradient norms of the training loss.

Rules worth knowing:
- A layer called several times in one forward pass (a shared layer) is measured on
  its first call; later calls run unchanged.
- **Measure what training sees, change nothing.** In `mode="training"` (the default)
  the pass runs as a training step does: batch normalization normalizes with the probe
  batch's statistics. Stochastic layers (those that own a `keras.random.SeedGenerator`:
  Dropout and its variants, noise layers, random augmentation, recurrent cells with
  dropout) run as in inference, so measurements are deterministic, and every state
  update (moving statistics, seed generators, metrics) is discarded: a fit with probes
  ends bit-identical to one without. `mode="inference"` measures what `predict`
  computes (`training=False`: moving statistics).
"""

import collections
import contextlib
import dataclasses
import inspect
import math
import weakref

import keras
import numpy as np

from keras_initkit._keras_private import (
    batch_moments,
    batch_norm_without_update,
    sublayers,
    unfused,
)
from keras_initkit.probe import backend
from keras_initkit.probe.attention import call_attention
from keras_initkit.probe.backend import to_numpy
from keras_initkit.probe.data import as_batches
from keras_initkit.probe.intercept import call_split, intercept
from keras_initkit.probe.recurrent import call_recurrent
from keras_initkit.probe.selection import all_layers, make_sites, resolve_layers
from keras_initkit.validation import one_of, positive_int

MODES = ("training", "inference")
# How a layer's call is split into what its reducers see as `pre` and its output.
_SPLITS = {"recurrent": call_recurrent, "attention": call_attention}


class Reducer:
    """A family of statistics the probe computes on device, per selected layer.

    Subclasses set `name` and `merge` and override `applies`, `reduce` and
    `finalize`. `merge` maps each stat `reduce` returns to how per-batch values
    combine: `"mean"` (sample-weighted mean), `"max"`, `"min"`, `"last"`,
    `"moments"` (mean and biased variance: the pair `moments` returns, which the
    host sees as a `(2, ...)` stack; pooled exactly), or
    `"sample"` (values concatenated). A reducer that reads only the layer's input
    sets `needs = "inputs"`: it then runs before the layer (with `pre` and
    `outputs` None), which keeps the probe's peak memory low. A batch-norm reducer
    that needs the per-channel moments of the layer's input sets
    `needs = "batch_moments"`: where Keras computes them in two passes (TensorFlow,
    JAX) it runs after the layer and its `pre` is the `BatchMoments` the layer
    normalized a training batch with (no second computation), or None when the layer
    computed none (inference mode); elsewhere (torch, a synchronized layer) it runs
    before the layer like an `"inputs"` reducer, with `pre` None. With `pre` None it
    computes the moments from `inputs` and reads the moving statistics itself (no
    update has happened). For a recurrent layer
    (`site.kind == "recurrent"`) `pre` is a `probe.recurrent.Trace` (input and
    hidden-state sequences, mask, initial state), for an attention layer a
    `probe.attention.Weights`; `outputs` is the layer's (first) output.
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
    """`(mean, variance)` over `axes` in float32, two-pass for accuracy (the variance is
    biased). A reducer returns the pair as one stat: it is packed as their stack."""
    return backend.current().moments(x, axes)


def pool(kind, values, weights):
    """Pool per-batch host `values` of one statistic exactly; `weights` = batch sizes."""
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


# Attributes by which a layer without a SeedGenerator of its own, drawing from Keras'
# global generator, says it is stochastic: keras.applications' ConvNeXt
# `StochasticDepth(drop_path_rate)`, keras_hub's DropPath layers (`rate`, `drop_prob`).
_DROP_RATES = ("rate", "drop_rate", "drop_prob", "drop_path_rate", "dropout", "dropout_rate")


def _draws_unseeded(layer):
    """A leaf layer with a positive drop rate and a `training` argument. A layer that
    holds others (a Transformer block with a `dropout` setting) is not one: its own
    dropout layers are, and its normalization layers must keep the mode."""
    rates = (getattr(layer, name, None) for name in _DROP_RATES)
    if not any(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates):
        return False  # most layers: no signature read, no sublayer walk
    call = getattr(type(layer), "call", None)
    if call is None or "training" not in inspect.signature(call).parameters:
        return False
    return not sublayers(layer)


def stochastic_layers(model):
    """The layers of `model` that draw random numbers in training: those that own a
    SeedGenerator; recurrent layers (their dropout masks are drawn outside the cell;
    `training` changes nothing else in them); and leaf layers with a drop rate that
    draw from the global generator (`_draws_unseeded`: ConvNeXt's stochastic depth)."""
    return [
        layer
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.RNN)
        or any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())
        or _draws_unseeded(layer)
    ]


def deterministic(layer, call, args, kwargs):
    """An `intercept` hook: a stochastic layer runs as in inference (dropout and noise
    are the identity, augmentation is off), whatever the model's mode."""
    if "training" in kwargs:
        kwargs = {**kwargs, "training": False}
    return call(*args, **kwargs)


def without_update(layer, call, args, kwargs):
    """An `intercept` hook: a batch-norm layer does not build the moving-statistics
    update that a stateless scope would drop (`_keras_private.batch_norm_without_update`;
    about half of its traced ops)."""
    return batch_norm_without_update(layer, call)(*args, **kwargs)


@contextlib.contextmanager
def training_semantics(model, mode, stochastic, *, discard=True):
    """Run `model` in `mode` with nothing changed: `stochastic` layers deterministic (in
    training mode) and, with `discard`, every state update recorded in a scope and
    dropped (in training mode, batch-norm layers do not even build theirs wherever
    they run in a stateless scope: this one, or the caller's). Yields the `training`
    flag to call the model with."""
    training = one_of(mode, "mode", MODES) == "training"
    with contextlib.ExitStack() as stack:
        stack.enter_context(backend.current().preserving_rng())
        layers = all_layers(model)
        stack.enter_context(unfused(layers))  # each direction a call the probe sees
        if training and stochastic:
            stack.enter_context(intercept(stochastic, deterministic))
        if training:
            norms = [x for x in layers if isinstance(x, keras.layers.BatchNormalization)]
            stack.enter_context(intercept(norms, without_update))
        if discard:
            stack.enter_context(backend.current().discarding_updates(model))
        yield training


_CACHE = weakref.WeakKeyDictionary()  # model -> {key: runner}


def _key(value):
    """A hashable key for a runner's construction argument."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, Reducer):
        return (type(value), _key(vars(value)))
    return ("object", id(value))


def variable_key(model):
    """What a runner built for `model` depends on of its variables: which are trainable
    (fine-tuning freezes and unfreezes layers between fits) and how many there are."""
    return tuple(id(v) for v in model.trainable_variables), len(model.variables)


def cached(cls, model, *args, **kwargs):
    """`cls(model, *args, **kwargs)`, built once per model and arguments and reused.

    A runner keeps its call count and compiled function: `diagnose` called again on
    the same model (and `suggest_initializer`'s candidates) counts towards compiling
    (`backend.Lazy`) and then reuses the traced function instead of tracing it again.
    The key includes the model's variables, so a model whose trainable set changed
    gets a new runner.
    """
    key = (cls, variable_key(model), _key(args), _key(sorted(kwargs.items())))
    runners = _CACHE.setdefault(model, {})
    if key not in runners:
        runners[key] = cls(model, *args, **kwargs)
    return runners[key]


class Runner:
    """Compile a statistics function once, pack its output, transfer once, unpack.

    A subclass implements `statistics(*args)`, which returns (on device, possibly
    traced) a nested dict `{site: {group: {stat: tensor}}}` of small tensors of static
    shape. `vector(*args)` is that dict packed into one float32 vector, compiled once
    per input signature through the backend module once that pays (`backend.Lazy`);
    `host(vectors)` brings a list of such vectors to the host in one transfer and
    unpacks each row.
    """

    LIMIT = "EAGER_CALLS"  # the backend's limit on eager calls (see `backend.Lazy`)

    def __init__(self, model, *, compile=True):
        self.model = model
        self._layout = None
        build = backend.current().compile_function
        self._vector = backend.Lazy(
            self._packed, (lambda: build(self._packed, model)) if compile else None, self.LIMIT
        )

    def plan(self, calls):
        """Announce that about `calls` more calls (batches) will come: a function that
        will have been used that often in all is compiled at once (see `backend.Lazy`)."""
        for fn in self._lazy():
            fn.planned = fn.calls + calls

    def _lazy(self):
        return [self._vector]

    def statistics(self, *args):
        raise NotImplementedError

    def _packed(self, *args):
        return self._pack(self.statistics(*args))

    def _pack(self, stats):
        """`{site: {group: {stat: tensor}}}` as one float32 vector (layout recorded).

        A stat may be a tuple of tensors of one shape (`moments`' pair): it is
        unpacked as their stack. Every scalar goes into one stack at the front and
        every vector as it is; only the others are reshaped. A stack or a reshape per
        leaf would add ~600 ops (and their constants) to ResNet50's traced probe.
        """
        keys = [(s, g, k) for s, groups in stats.items() for g, by in groups.items() for k in by]
        scalars, others, placed = [], [], []
        size = 0  # the flat tensors' values so far
        for key in keys:
            leaf = stats[key[0]][key[1]][key[2]]
            stacked = isinstance(leaf, (tuple, list))
            tensors = list(leaf) if stacked else [leaf]
            shapes = {tuple(t.shape) for t in tensors}
            shape = shapes.pop() if len(shapes) == 1 else None
            if shape is None or any(d is None for d in shape):
                raise ValueError(
                    "A reducer must return tensors of static shape (reshape them), or a "
                    "tuple of tensors of one static shape. Received: shape(s) "
                    f"{sorted({tuple(t.shape) for t in tensors}, key=str)} for {'/'.join(key)}"
                )
            pieces = []  # (is a scalar, offset in its block, size)
            for t in tensors:
                t = keras.ops.cast(t, "float32")
                if not shape:
                    pieces.append((True, len(scalars), 1))
                    scalars.append(t)
                else:
                    pieces.append((False, size, math.prod(shape)))
                    others.append(t if len(shape) == 1 else keras.ops.reshape(t, (-1,)))
                    size += math.prod(shape)
            placed.append((key, (len(tensors), *shape) if stacked else shape, pieces))
        # The vector: the scalars' stack first, then the flat tensors in order.
        self._layout = [
            (key, shape, [(i if scalar else len(scalars) + i, n) for scalar, i, n in pieces])
            for key, shape, pieces in placed
        ]
        parts = ([keras.ops.stack(scalars)] if scalars else []) + others
        if not parts:
            return keras.ops.zeros((0,), "float32")
        return parts[0] if len(parts) == 1 else keras.ops.concatenate(parts)

    def vector(self, *args, upcoming=1):
        """The packed statistics of `args`: eager at first, compiled once that pays
        (`upcoming`: the calls this one starts, see `backend.Lazy`)."""
        return self._vector(*args, upcoming=upcoming)

    def host(self, vectors):
        """One host transfer for all `vectors`; each row unpacked to the nested dict."""
        if len(vectors) == 1:
            rows = to_numpy(vectors[0])[None]
        else:
            rows = to_numpy(keras.ops.stack(vectors))
        return [self._unpack(row) for row in rows.astype(np.float64)]

    def _unpack(self, row):
        out = {}
        for (site, group, stat), shape, pieces in self._layout:
            if len(pieces) == 1:
                start, size = pieces[0]
                value = row[start : start + size]
            else:
                value = np.concatenate([row[start : start + size] for start, size in pieces])
            out.setdefault(site, {}).setdefault(group, {})[stat] = value.reshape(shape)
        return out


# Order a layer's steps (see `backend.run_after` and `Lag`) when its input or output
# holds at least this many values (64 KiB of float32). Below that, reductions are
# dispatch-bound, running them beside the forward pass is faster (a 20-layer MLP's
# per-batch probe of 64 samples: ~20% less CPU), and keeping such activations alive
# costs next to nothing.
CHAIN_MIN_SIZE = 2**14


def _large(tensors):
    """True when a tensor in `tensors` may hold CHAIN_MIN_SIZE values (unknown: yes)."""
    for t in keras.tree.flatten(tensors):
        shape = tuple(t.shape) if keras.ops.is_tensor(t) else ()
        if shape and (None in shape or math.prod(shape) >= CHAIN_MIN_SIZE):
            return True
    return False


# How far a traced pass's reductions may lag behind its forward pass (see `Lag`), as a
# fraction of the largest activation so far. 0 chains every large layer strictly; 0.5
# lets the reductions of layers smaller than half the largest run beside the next
# layers. Update / peak memory against strict, interleaved (TensorFlow CPU, probe of
# 32): ResNet50 -5% wall, 1.05x `predict`'s peak (strict 0.92x); the 4-block
# Transformer -5% wall, 1.10x (strict 1.42x); the 20-layer MLP and the small CNN of
# bench_monitors unchanged. 1.0 fails the CNN's memory target (1.62x).
LAG_FRACTION = 0.5


class Lag:
    """The order of one traced pass's steps (see `backend.run_after`).

    TensorFlow's executor runs the forward chain ahead of the reductions hanging off
    it, so every activation would stay alive until the end of the pass. So a large
    layer's output is handed on only after the reductions of earlier layers (its own
    included), oldest first, while the activations those still hold (each layer's
    output, and its input where a reduction reads it) exceed `fraction` of the largest
    one seen. The probe's peak memory stays near the forward pass's, and the
    reductions of small layers run beside the next layers. Eagerly, and on JAX and
    torch, `run_after` ignores the order.
    """

    def __init__(self, fraction=None):
        self.fraction = LAG_FRACTION if fraction is None else fraction
        self._pending = collections.deque()  # (reduction tensors, bytes they hold)
        self._held = self._largest = 0

    def due(self):
        """The reduction tensors the next layer must wait for."""
        due = []
        while self._pending and self._held > self.fraction * self._largest:
            tensors, size = self._pending.popleft()
            due += tensors
            self._held -= size
        return due

    def hold(self, tensors, activations):
        """Reductions `tensors` that keep `activations` alive until they run."""
        sizes = [_bytes(t) for t in keras.tree.flatten(activations)]
        self._largest = max([self._largest, *sizes])
        self._pending.append((tensors, sum(sizes)))
        self._held += sum(sizes)


def _bytes(t):
    """A tensor's size in bytes (a traced pass's shapes are known; unknown: 1)."""
    if not keras.ops.is_tensor(t):
        return 0
    shape = [d or 1 for d in t.shape]
    return math.prod(shape) * np.dtype(keras.backend.standardize_dtype(t.dtype)).itemsize


@dataclasses.dataclass
class BatchMoments:
    """What a batch-norm layer computed from a training batch (see `Reducer`): the
    per-channel `mean` and biased `variance` of its input, and its `moving_mean` and
    `moving_variance` before it updated them."""

    mean: object
    variance: object
    moving_mean: object
    moving_variance: object


def _reuses_batch_moments(site, reducers):
    """True when a reducer of this batch-norm site asks for the layer's own batch
    moments and the backend's are two-pass, as the probe's (not a synchronized
    layer's: one pass across replicas)."""
    return (
        site.is_batchnorm
        and any(r.needs == "batch_moments" for r in reducers)
        and backend.current().REUSES_BATCH_MOMENTS
        and not getattr(site.layer, "synchronized", False)
    )


def _detached(value):
    """`value` (a tensor, a nest of them or a dataclass of them: a recurrent `Trace`,
    attention `Weights`) with every tensor behind `stop_gradient`."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _detached(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **fields)

    def detach(t):
        floating = keras.ops.is_tensor(t) and "float" in keras.backend.standardize_dtype(t.dtype)
        return keras.ops.stop_gradient(t) if floating else t

    return keras.tree.map_structure(detach, value)


def in_forward_order(sites, order):
    """`sites` sorted by `order` (site names in the order of first calls, None: not run
    yet); sites not called keep their order, after the others. A model's layer order
    can differ from its forward order: a subclassed model may create its head first,
    and attention layers track their output projection first."""
    if order is None:
        return list(sites)
    rank = {name: i for i, name in enumerate(order)}
    return sorted(sites, key=lambda s: rank.get(s.name, len(rank)))


class Probe(Runner):
    """Run `model` on probe data and collect each reducer's metrics per layer.

    Args:
        model: a built Keras model (Sequential, Functional, nested or subclassed).
        reducers: the `Reducer`s to compute, all in the same forward pass.
        layers: layer names or objects to watch; None for every layer some reducer
            applies to.
        batch_size: split array data into chunks of this many samples; None runs
            all samples at once.
        compile: trace the pass into one compiled function (TensorFlow and JAX) once
            that pays: a one-off run is eager, a repeated one compiled (see
            `backend.Lazy` and `plan`); False always runs eagerly.
        mode: `"training"` measures what a training step computes (batch norm with
            the batch's statistics; stochastic layers deterministic; no state
            changes), `"inference"` what `predict` computes. Defaults to `"training"`.
    """

    def __init__(
        self, model, reducers, *, layers=None, batch_size=None, compile=True, mode="training"
    ):
        super().__init__(model, compile=compile)
        self.mode = one_of(mode, "mode", MODES)
        self._stochastic = stochastic_layers(model)
        self.reducers = list(reducers)
        self.batch_size = positive_int(batch_size, "batch_size")
        sites = make_sites(model, resolve_layers(model, layers))
        self._plan = {
            id(site.layer): (site, [r for r in self.reducers if r.applies(site)]) for site in sites
        }
        if layers is None:
            self._plan = {k: v for k, v in self._plan.items() if v[1]}
        self._order = None

    @property
    def sites(self):
        """The watched sites (forward order once the probe has run)."""
        return in_forward_order([site for site, _ in self._plan.values()], self._order)

    def _measure(self, site, reducers, layer, call, args, kwargs, detach, lag):
        """One layer's reductions and output. A large layer's steps run in order (input
        reductions, the layer, output reductions), and its output is handed on once the
        reductions `lag` says are due have run. `detach`: the reductions read
        gradient-free copies (inside a gradient pass)."""
        run_after = backend.current().run_after
        inputs = args[0] if args else next(iter(kwargs.values()))
        stats, last, chain = {}, [], _large(inputs)
        seen = _detached(inputs) if detach else inputs
        reuse = _reuses_batch_moments(site, reducers)
        before = [
            r for r in reducers if r.needs == "inputs" or (r.needs == "batch_moments" and not reuse)
        ]
        for r in before:
            stats[r.name] = run_after(r.reduce, last, site, seen, None, None)
            last = keras.tree.flatten(stats[r.name]) if chain else []
        split = _SPLITS.get(site.kind, call_split)
        with batch_moments(layer) if reuse else contextlib.nullcontext([]) as captured:
            pre, out = run_after(split, last, layer, call, args, kwargs)
        batch = BatchMoments(*captured[0]) if captured else None
        chain = chain or _large(out)
        last = []
        main = out[0] if isinstance(out, (list, tuple)) else out  # return_state
        if detach:
            pre, main, batch = _detached(pre), _detached(main), _detached(batch)
        for r in reducers:
            if r not in before:
                given = batch if r.needs == "batch_moments" else pre
                stats[r.name] = run_after(r.reduce, last, site, seen, given, main)
                last = keras.tree.flatten(stats[r.name]) if chain else []
        if chain:
            lag.hold(keras.tree.flatten(stats), [inputs, out] if before else [out])
            due = lag.due()
            if due:
                out = run_after(keras.tree.map_structure, due, backend.current().identity, out)
        return {r.name: stats[r.name] for r in reducers}, out

    def statistics(self, x):
        """One intercepted forward pass: `{site: {reducer: {stat: tensor}}}`."""
        unwatched = [layer for layer in self._stochastic if id(layer) not in self._plan]
        with (
            backend.current().no_grad(),
            training_semantics(self.model, self.mode, unwatched) as training,
        ):
            return self._intercepted(x, training, detach=False)[1]

    def forward(self, x, training):
        """`(model output, packed statistics)` of one pass, for a caller that runs the
        model itself (the gradient pass, `GradientProbe(forward=...)`) and has set up
        the training semantics: the reductions are kept out of its gradient."""
        outputs, collected = self._intercepted(x, training, detach=True)
        return outputs, self._pack(collected)

    def _intercepted(self, x, training, detach):
        """`(outputs, {site: {reducer: {stat: tensor}}})` of `model(x, training)`."""
        collected, lag = {}, Lag()
        stochastic = {id(layer) for layer in self._stochastic if self.mode == "training"}
        scope = backend.current().scope
        home = scope()

        def hook(layer, call, args, kwargs):
            if id(layer) in stochastic and "training" in kwargs:  # see `deterministic`
                kwargs = {**kwargs, "training": False}
            site, reducers = self._plan[id(layer)]
            # A shared layer is measured on its first call. A layer called inside a
            # control-flow branch or loop body of a traced pass (`ops.cond`,
            # `ops.while_loop`) is not measured: its tensors cannot leave that scope.
            if site.name in collected or scope() != home:
                return call(*args, **kwargs)
            measured, out = self._measure(site, reducers, layer, call, args, kwargs, detach, lag)
            collected[site.name] = measured
            return out

        with intercept([site.layer for site, _ in self._plan.values()], hook):
            outputs = self.model(x, training=training)
        self._order = list(collected)
        return outputs, collected

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
        vectors = [self.vector(x, upcoming=len(batches) - i) for i, (x, _) in enumerate(batches)]
        return self.result(vectors, batches, source)

    def result(self, vectors, batches, source=""):
        """The `ProbeResult` of the packed `vectors` of `batches` (one per batch)."""
        per_batch = self.host(vectors)  # the one transfer
        weights = np.asarray([keras.tree.flatten(x)[0].shape[0] for x, _ in batches], "float64")
        metrics = {}
        for site in self.sites:
            if site.name not in per_batch[0]:
                continue  # never called in this forward pass
            values = {}
            for r in self._plan[id(site.layer)][1]:
                merged = per_batch[0][site.name][r.name]
                if len(per_batch) > 1:  # one batch: its values are the merged values
                    rows = [b[site.name][r.name] for b in per_batch]
                    merged = {k: pool(r.merge[k], [b[k] for b in rows], weights) for k in merged}
                values.update(r.finalize(site, merged))
            metrics[site.name] = values
        return ProbeResult(self.sites, metrics, source)

"""Property-based fuzzing: initializers, lsuv_init, the probe and the monitors.

Initializers: any configuration x any shape x any dtype either returns a finite tensor
of the right shape and dtype with the initializer's defining property, or raises
`ValueError` saying what it received: never another exception type, never NaN.
lsuv_init, the probe and the monitors: random small architectures (Dense, Conv, batch
norm, activations, depth 1 to 6) never crash, and keep their defining invariants.

Deterministic (`derandomize=True`, no example database), no deadlines, few examples:
the file runs in well under a minute. Nothing here needs TensorFlow.
"""

import json
import math
import tempfile
import warnings

import keras
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

import keras_initkit
from keras_initkit.callbacks import TrainingMonitor
from keras_initkit.initializers import LSUV, DeltaOrthogonal, Identity, Normalized, Sparse, ZerO
from keras_initkit.probe import (
    ActivationMoments,
    BatchNormStatistics,
    DeadUnits,
    Probe,
    Reducer,
    Saturation,
)

pytestmark = [
    pytest.mark.backend_agnostic,
    pytest.mark.filterwarnings("ignore:Explicitly requested dtype:UserWarning"),
    pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning"),
    pytest.mark.filterwarnings("ignore::keras_initkit.lsuv.LSUVWarning"),
]


def fuzz(max_examples):
    """Deterministic settings: same examples on every run, no deadline, no database.

    JAX and torch run every op eagerly (JAX compiles each op once per shape): a
    quarter of the examples there.
    """
    if keras.backend.backend() != "tensorflow":
        max_examples = max(3, max_examples // 4)
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# JAX computes float64 as float32 unless jax_enable_x64 is set.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    HAS_FLOAT64 = keras.backend.standardize_dtype(ops.zeros((1,), "float64").dtype) == "float64"
FLOATS = ("float16", "bfloat16", "float32", "float64")
EPS = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}
NUMPY = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}
NUMPY["float64"] = np.float64

# ------------------------------------------------------------------ strategies

dims = st.integers(1, 7)
shapes = st.lists(dims, min_size=0, max_size=6).map(tuple)
dtypes = st.sampled_from([*FLOATS, None, "int32", "uint8", "bool", "complex64"])
# Valid gains stay within [1e-2, 1e2]: far larger or smaller gains overflow or
# underflow half precisions by arithmetic, which no initializer can prevent.
valid_gains = st.floats(1e-2, 1e2)
invalid_gains = st.sampled_from([0, 0.0, -1.0, -1e-9, math.nan, math.inf, -math.inf, True, "1"])
gains = st.one_of(valid_gains, valid_gains, invalid_gains)
valid_seeds = st.one_of(st.none(), st.integers(0, 2**32 - 1), st.just("generator"))
invalid_seeds = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**32),
    st.sampled_from([1.5, "3", True, False, [1]]),
)
seeds = st.one_of(valid_seeds, valid_seeds, valid_seeds, invalid_seeds)


def is_gain(value):
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def is_seed(value):
    if value is None or value == "generator":
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def make_seed(value):
    return keras.random.SeedGenerator(7) if value == "generator" else value


# ------------------------------------------------------------------ the contract


def attempt(build, shape, dtype):
    """`(values, dtype)` or `(None, error)`: only a `ValueError` with "Received" passes."""
    try:
        init = build()
    except ValueError as e:
        assert "Received" in str(e), str(e)
        return None, e
    try:
        values = init(shape, dtype=dtype)
    except ValueError as e:
        assert "Received" in str(e), str(e)
        return None, e
    return values, None


def returned(values, shape, dtype):
    """Checks shape, dtype and finiteness; returns `(float64 array, effective dtype)`."""
    expected = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
    if expected == "float64" and not HAS_FLOAT64:
        expected = "float32"
    assert tuple(values.shape) == tuple(shape)
    assert keras.backend.standardize_dtype(values.dtype) == expected
    array = ops.convert_to_numpy(ops.cast(values, "float32") if EPS[expected] > 2**-20 else values)
    array = np.asarray(array, dtype=np.float64)
    assert np.all(np.isfinite(array)), "non-finite values"
    return array, expected


def rounded(value, dtype):
    """`value` rounded to `dtype`, as float64."""
    return float(np.asarray(value, dtype=np.float64).astype(NUMPY[dtype]).astype(np.float64))


def split_centre(w):
    """`(centre matrix, everything else)` of a kernel `(k..., in, out)`."""
    centre = tuple((k - 1) // 2 for k in w.shape[:-2])
    rest = w.copy()
    rest[centre] = 0.0
    return w[centre], rest


def assert_orthonormal_rows(m, scale, dtype):
    """`m mᵀ = scale² I` (rows orthogonal, each of norm `scale`)."""
    n = m.shape[0]
    atol = 8 * max(n, m.shape[1]) * EPS[dtype]
    np.testing.assert_allclose((m @ m.T) / scale**2, np.eye(n), atol=atol)


# ------------------------------------------------------------------ initializers


def allowed_error(shape, dtype, min_rank, max_rank=None):
    """Whether a valid initializer may refuse: a non-float dtype or a rank out of range."""
    bad_dtype = dtype is not None and dtype not in FLOATS
    bad_rank = len(shape) < min_rank or (max_rank is not None and len(shape) > max_rank)
    return bad_dtype or bad_rank


@fuzz(100)
@given(gain=gains, shape=shapes, dtype=dtypes)
def test_identity(gain, shape, dtype):
    values, error = attempt(lambda: Identity(gain=gain), shape, dtype)
    if not is_gain(gain):
        assert error is not None and "gain" in str(error)
        return
    if error is not None:
        assert allowed_error(shape, dtype, 2, 5), error
        return
    w, dt = returned(values, shape, dtype)
    n_in, n_out = shape[-2:]
    if len(shape) == 2 and n_in < n_out and n_out % n_in == 0:
        eye = np.tile(np.eye(n_in), (1, n_out // n_in))
    else:
        eye = np.eye(n_in, n_out)
    if len(shape) > 2:
        w, rest = split_centre(w)
        np.testing.assert_array_equal(rest, 0.0)
    np.testing.assert_array_equal(w, rounded(gain, dt) * eye)


@fuzz(100)
@given(gain=gains, seed=seeds, shape=shapes, dtype=dtypes)
def test_delta_orthogonal(gain, seed, shape, dtype):
    values, error = attempt(lambda: DeltaOrthogonal(gain, seed=make_seed(seed)), shape, dtype)
    if not (is_gain(gain) and is_seed(seed)):
        assert error is not None
        return
    if error is not None:
        assert allowed_error(shape, dtype, 3, 5) or (
            shape[-2] > shape[-1] and "in=" in str(error)
        ), error
        return
    w, dt = returned(values, shape, dtype)
    centre, rest = split_centre(w)
    np.testing.assert_array_equal(rest, 0.0)
    assert_orthonormal_rows(centre, gain, dt)


@fuzz(150)
@given(
    sparsity=st.one_of(st.none(), st.floats(0, 0.999), st.sampled_from([1.0, -0.1, math.nan])),
    nonzero=st.one_of(st.none(), st.integers(-2, 40), st.sampled_from([2.5, True])),
    stddev=st.one_of(st.none(), st.floats(1e-3, 1e2), st.sampled_from([0.0, -1.0, math.inf])),
    seed=seeds,
    shape=shapes,
    dtype=dtypes,
)
def test_sparse(sparsity, nonzero, stddev, seed, shape, dtype):
    build = lambda: Sparse(sparsity, nonzero, stddev, seed=make_seed(seed))  # noqa: E731
    values, error = attempt(build, shape, dtype)
    good_sparsity = sparsity is None or 0 <= sparsity < 1
    good_nonzero = nonzero is None or (
        isinstance(nonzero, int) and not isinstance(nonzero, bool) and nonzero >= 1
    )
    good_stddev = stddev is None or (math.isfinite(stddev) and stddev > 0)
    both = sparsity is not None and nonzero is not None
    if not (good_sparsity and good_nonzero and good_stddev and is_seed(seed)) or both:
        assert error is not None
        return
    if error is not None and allowed_error(shape, dtype, 2):
        return
    fan_in = math.prod(shape[:-1])
    if nonzero is None and sparsity is None:
        nonzero = 15
    k = nonzero if nonzero is not None else fan_in - round(sparsity * fan_in)
    if not 1 <= k <= fan_in:
        assert error is not None and "fan_in" in str(error), error
        return
    assert error is None, error
    w, _ = returned(values, shape, dtype)
    np.testing.assert_array_equal(np.count_nonzero(w.reshape(fan_in, -1), axis=0), k)


@fuzz(100)
@given(gain=gains, seed=seeds, shape=shapes, dtype=dtypes)
def test_normalized(gain, seed, shape, dtype):
    values, error = attempt(lambda: Normalized(gain, seed=make_seed(seed)), shape, dtype)
    if not (is_gain(gain) and is_seed(seed)):
        assert error is not None
        return
    if error is not None:
        assert allowed_error(shape, dtype, 2), error
        return
    w, dt = returned(values, shape, dtype)
    norms = np.linalg.norm(w.reshape(-1, shape[-1]), axis=0)
    rtol = 4 * (math.sqrt(math.prod(shape[:-1])) + 1) * EPS[dt]
    np.testing.assert_allclose(norms, gain, rtol=rtol)


@fuzz(80)
@given(shape=shapes, dtype=dtypes)
def test_zero(shape, dtype):
    values, error = attempt(ZerO, shape, dtype)
    if error is not None:
        assert allowed_error(shape, dtype, 2, 5), error
        return
    w, dt = returned(values, shape, dtype)
    if len(shape) > 2:
        w, rest = split_centre(w)
        np.testing.assert_array_equal(rest, 0.0)
    n_in, n_out = shape[-2:]
    if n_in >= n_out:
        np.testing.assert_array_equal(w, np.eye(n_in, n_out))
        return
    m = math.ceil(math.log2(n_out))
    c = rounded(2.0 ** (-(m - 1) / 2), dt)
    popcount = np.vectorize(lambda v: bin(v).count("1"))
    signs = 1 - 2 * (popcount(np.arange(n_in)[:, None] & np.arange(n_out)[None, :]) % 2)
    np.testing.assert_array_equal(w, c * signs)
    if n_out == 2**m:  # rows orthogonal, each of squared norm n_out * c²
        assert_orthonormal_rows(w, math.sqrt(n_out) * c, dt)


BASES = ["orthogonal", "glorot_uniform", "he_normal", "keras_initkit>Sparse"]


@fuzz(60)
@given(
    base=st.sampled_from([*BASES, "no_such_initializer", 3]),
    seed=seeds,
    shape=st.lists(dims, min_size=1, max_size=4).map(tuple),
    dtype=dtypes,
)
def test_lsuv_marker(base, seed, shape, dtype):
    values, error = attempt(lambda: LSUV(base, seed=make_seed(seed)), shape, dtype)
    if base not in BASES or not is_seed(seed):
        assert error is not None
        return
    if error is not None:
        return  # the base's own validation (rank, fan-in), with "Received"
    w, dt = returned(values, shape, dtype)
    if base == "orthogonal":  # Keras flattens to (fan_in, out): orthonormal rows or columns
        flat = w.reshape(-1, shape[-1])
        assert_orthonormal_rows(flat if flat.shape[0] <= flat.shape[1] else flat.T, 1.0, dt)


@fuzz(30)
@given(
    cls=st.sampled_from([Identity, DeltaOrthogonal, Sparse, Normalized, ZerO, LSUV]),
    shape=st.lists(st.integers(0, 3), min_size=2, max_size=4).map(tuple),
)
def test_zero_sized_shapes_and_round_trip(cls, shape):
    """Empty kernels: the contract still holds; and every config survives JSON."""
    init = cls(nonzero=1) if cls is Sparse else cls()
    values, error = attempt(lambda: init, shape, "float32")
    if error is None:
        returned(values, shape, "float32")
    config = json.loads(json.dumps(keras.initializers.serialize(init)))
    again = keras.initializers.deserialize(config)
    assert again.get_config() == init.get_config()


# ------------------------------------------------------------------ architectures

ACTIVATIONS = [
    "linear",
    "relu",
    "relu6",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "softsign",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
]
KERNELS = [
    "glorot_uniform",
    "he_normal",
    "orthogonal",
    "zeros",
    keras.initializers.RandomNormal(stddev=5.0, seed=1),
    Normalized(seed=2),
    Sparse(nonzero=1, seed=3),
]


KINDS = ["dense", "bn", "act"]


@st.composite
def architectures(draw, max_depth=6):
    """`(model, x)` as a spec: a small random Sequential net and a batch for it.

    The strategy draws plain data; `build` makes the model outside it (Keras draws
    seeds from `random` when it creates layers, which Hypothesis forbids in strategies).
    """
    spatial = draw(st.booleans())
    input_shape = (draw(st.integers(3, 6)), draw(st.integers(3, 6)), 2) if spatial else (5,)
    layers = []
    for _ in range(draw(st.integers(1, max_depth))):
        layers.append(
            (
                draw(st.sampled_from(KINDS + ["conv"] if spatial else KINDS)),
                draw(st.sampled_from(ACTIVATIONS)),
                draw(st.integers(0, len(KERNELS) - 1)),
                draw(st.integers(1, 6)),  # units
                draw(st.integers(1, 3)),  # kernel size
                draw(st.sampled_from(["zeros", "ones"])),  # bias
            )
        )
    batch = draw(st.integers(4, 24))
    scale = draw(st.sampled_from([1.0, 0.01, 10.0]))
    seed = draw(st.integers(0, 2**16))
    return input_shape, tuple(layers), batch, scale, seed


def build(spec):
    input_shape, specs, batch, scale, seed = spec
    keras.utils.set_random_seed(seed)
    layers = []
    for i, (kind, act, kernel, units, size, bias) in enumerate(specs):
        common = dict(activation=act, kernel_initializer=KERNELS[kernel], bias_initializer=bias)
        if kind == "conv":
            layers.append(
                keras.layers.Conv2D(units, size, padding="same", name=f"l{i}_conv", **common)
            )
        elif kind == "dense":
            layers.append(keras.layers.Dense(units, name=f"l{i}_dense", **common))
        elif kind == "bn":
            layers.append(keras.layers.BatchNormalization(name=f"l{i}_bn"))
        else:
            layers.append(keras.layers.Activation(act, name=f"l{i}_{act}"))
    layers += [keras.layers.Flatten(name="flatten"), keras.layers.Dense(1, name="head")]
    model = keras.Sequential([keras.Input(input_shape), *layers])
    x = np.random.default_rng(seed).normal(size=(batch, *input_shape)) * scale
    return model, x.astype("float32")


class PreVariance(Reducer):
    """Variance of a layer's pre-activation and output: an independent re-measure."""

    name = "variance"
    merge = {"pre": "mean", "out": "mean"}

    def reduce(self, site, inputs, pre, outputs):
        def var(t):
            t = ops.cast(t, "float32")
            return ops.mean(ops.square(t - ops.mean(t)))

        return {"pre": var(pre), "out": var(outputs)}

    def finalize(self, site, stats):
        return {"pre": float(stats["pre"]), "out": float(stats["out"])}


def weights(model):
    return [np.array(ops.convert_to_numpy(v)) for v in model.weights]


@fuzz(15)
@given(
    arch=architectures(),
    target=st.sampled_from([1.0, 0.5, 2.0]),
    tolerance=st.sampled_from([0.1, 0.02, 0.3]),
    measure=st.sampled_from(["pre_activation", "post_activation"]),
    max_iterations=st.integers(1, 10),
)
def test_lsuv_init_on_random_architectures(arch, target, tolerance, measure, max_iterations):
    model, x = build(arch)
    before = weights(model)
    report = keras_initkit.lsuv_init(
        model,
        x,
        target_variance=target,
        tolerance=tolerance,
        measure=measure,
        max_iterations=max_iterations,
        verbose=0,
    )
    json.dumps(report.to_dict())
    str(report)
    kernel_layers = [
        layer.name
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]
    assert sorted(r.name for r in report.layers) == sorted(kernel_layers)
    after = weights(model)
    assert all(np.all(np.isfinite(w)) for w in after)
    # Nothing but kernels changed; skipped layers kept theirs.
    kernels = {id(model.get_layer(n).kernel) for n in kernel_layers}
    skipped = {id(model.get_layer(r.name).kernel) for r in report.layers if r.skipped}
    for v, a, b in zip(model.weights, before, after):
        if id(v) not in kernels or id(v) in skipped:
            np.testing.assert_array_equal(a, b)
    # Converged layers are within tolerance, as the report says and as re-measured.
    probe = Probe(model, [PreVariance()], layers=kernel_layers, compile=False)
    measured = probe.run(x).metrics
    key = "pre" if measure == "pre_activation" else "out"
    for r in report.layers:
        assert r.iterations <= max_iterations
        if r.skipped:
            continue
        assert r.converged == (abs(r.variance_after - target) <= tolerance * target)
        if r.converged:
            again = measured[r.name][key]
            assert abs(again - target) <= tolerance * target * 1.001 + 1e-5, (r, again)


RATIOS = (
    "saturated_fraction",
    "saturated_low",
    "saturated_high",
    "dead_fraction",
    "inactive_fraction",
    "firing_rate",
)


def intermediate(model, x):
    """Every layer's output on `x` (training=False), by layer name."""
    outputs = keras.Model(model.inputs, [layer.output for layer in model.layers])([x])
    return {layer.name: ops.convert_to_numpy(o) for layer, o in zip(model.layers, outputs)}


@fuzz(10)
@given(arch=architectures(), batch_size=st.sampled_from([None, 3, 8]))
def test_probe_on_random_architectures(arch, batch_size):
    model, x = build(arch)
    before = weights(model)
    reducers = [ActivationMoments(), Saturation(), DeadUnits(), BatchNormStatistics()]
    # Inference mode: the definitions are recomputed from `predict`-style outputs.
    result = Probe(model, reducers, batch_size=batch_size, mode="inference").run(x)
    outputs = intermediate(model, x)
    for site in result.sites:
        values = result.metrics[site.name]
        for metric in RATIOS:
            if metric in values:
                assert 0.0 <= values[metric] <= 1.0, (site.name, metric, values[metric])
        # Absent, not zero: a metric appears exactly where it is defined.
        assert ("saturated_fraction" in values) == (site.kind == "bounded")
        assert ("dead_fraction" in values) == (site.kind == "dead")
        assert ("inactive_fraction" in values) == (site.kind == "inactive")
        assert ("bn_mean_shift" in values) == site.is_batchnorm
        has_moments = site.activation is not None or site.has_kernel
        assert ("activation_mean" in values) == has_moments
        for metric, value in values.items():
            assert np.all(np.isfinite(value)), (site.name, metric)
        # Definitions, recomputed from the layer's own output.
        out = outputs[site.layer.name].astype(np.float64)
        if site.kind in ("dead", "inactive"):
            units = out.reshape(-1, out.shape[-1])
            assert values[f"{site.kind}_fraction"] == np.mean(np.all(units <= 0, axis=0))
        if site.kind == "bounded":
            low, high = site.bounds
            margin = 0.01 * (high - low)
            share = np.mean((out <= low + margin) | (out >= high - margin))
            assert values["saturated_fraction"] == pytest.approx(share, abs=1e-5)
        if has_moments:
            assert values["activation_mean"] == pytest.approx(out.mean(), rel=1e-3, abs=1e-4)
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)


@fuzz(4)
@given(
    arch=architectures(max_depth=4),
    update_freq=st.sampled_from(["epoch", 1, 2]),
    histograms=st.booleans(),
)
def test_training_monitor_on_random_architectures(arch, update_freq, histograms):
    model, x = build(arch)
    model.compile(optimizer="sgd", loss="mse")
    y = np.zeros((len(x), 1), "float32")
    with tempfile.TemporaryDirectory() as log_dir:
        monitor = TrainingMonitor(
            (x, y),
            log_dir=log_dir,
            update_freq=update_freq,
            histograms=histograms,
            gradients=True,
            verbose=0,
        )
        history = model.fit(x, y, batch_size=4, epochs=1, callbacks=[monitor], verbose=0)
    for key, series in history.history.items():
        if key.split("/")[0] in RATIOS:
            assert all(0.0 <= v <= 1.0 for v in series), (key, series)
    for layer, metrics in monitor.latest.items():
        for metric, value in metrics.items():
            assert math.isfinite(value) or metric in ("update_ratio",), (layer, metric, value)

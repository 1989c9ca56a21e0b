"""Tests for keras_initkit.initializers: a table-driven sweep, then properties."""

import json
import math
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_initkit import initializers
from keras_initkit.initializers import (
    LSUV,
    DeltaOrthogonal,
    Identity,
    Normalized,
    Sparse,
    ZerO,
)
from keras_initkit.initializers._utils import draw_seeds

# Nothing here needs TensorFlow: every test also runs under KERAS_BACKEND=jax.
pytestmark = [
    pytest.mark.backend_agnostic,
    pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning"),
]

DTYPES = ["float16", "bfloat16", "float32", "float64"]
# JAX computes float64 as float32 unless jax_enable_x64 is set.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    HAS_FLOAT64 = keras.backend.standardize_dtype(ops.zeros((1,), "float64").dtype) == "float64"
WIDE = "float64" if HAS_FLOAT64 else "float32"
RANDOM = [DeltaOrthogonal, Sparse, Normalized]

# A few shapes reused throughout: JAX compiles every op once per shape.
DENSE, WIDEN, NARROW = (6, 4), (3, 8), (8, 3)
CONV1, CONV2, CONV3 = (3, 4, 4), (3, 3, 2, 4), (2, 2, 2, 2, 3)

# name -> (factory, shapes it accepts)
TABLE = {
    "Identity": (
        lambda: Identity(gain=2.0),
        [(4, 4), WIDEN, NARROW, (2, 6), CONV1, CONV2, CONV3],
    ),
    "DeltaOrthogonal": (lambda: DeltaOrthogonal(seed=1), [CONV1, CONV2, CONV3]),
    "Sparse": (
        lambda: Sparse(nonzero=2, seed=1),
        [DENSE, CONV1, CONV2, CONV3, (1, 1, 1, 2, 2, 2)],
    ),
    "Normalized": (
        lambda: Normalized(gain=0.5, seed=1),
        [(1, 3), DENSE, CONV1, CONV2, CONV3],
    ),
    "ZerO": (lambda: ZerO(), [(4, 4), WIDEN, NARROW, CONV1, CONV2, CONV3]),
    "LSUV": (lambda: LSUV(seed=1), [DENSE, CONV1, CONV2]),
}
SWEEP = [(n, s) for n, (_, shapes) in TABLE.items() for s in shapes]


def to_numpy(x):
    """A tensor as a NumPy array (half precisions as float32)."""
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    return ops.convert_to_numpy(x)


def columns(w):
    """A kernel flattened to (fan_in, units)."""
    return np.reshape(w, (-1, w.shape[-1]))


def sylvester(m):
    h = np.ones((1, 1))
    for _ in range(m):
        h = np.block([[h, h], [h, -h]])
    return h


# ---------------------------------------------------------------- the sweep


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape", SWEEP, ids=[f"{n}-{s}" for n, s in SWEEP])
def test_sweep_shape_dtype_finite(name, shape, dtype):
    values = TABLE[name][0]()(shape, dtype=dtype)
    assert tuple(values.shape) == shape
    expected = dtype if HAS_FLOAT64 or dtype != "float64" else "float32"
    assert keras.backend.standardize_dtype(values.dtype) == expected
    assert np.all(np.isfinite(to_numpy(values)))


@pytest.mark.parametrize("name", TABLE)
def test_default_dtype_is_floatx(name):
    shape = TABLE[name][1][-1]
    values = TABLE[name][0]()(shape)
    assert keras.backend.standardize_dtype(values.dtype) == keras.backend.floatx()


# ---------------------------------------------------------------- Identity


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), NARROW, (3, 7)])
def test_identity_rank2_is_keras_identity(shape):
    expected = ops.convert_to_numpy(keras.initializers.Identity(gain=1.5)(shape))
    np.testing.assert_array_equal(to_numpy(Identity(gain=1.5)(shape)), expected)


def test_identity_dense_is_identity_map():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    layer = keras.layers.Dense(4, kernel_initializer=Identity(gain=2.0))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), 2.0 * x, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_identity_conv_same_padding_is_identity_map(rank, kernel_size):
    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
    x = np.random.default_rng(rank).normal(size=(2,) + (5,) * rank + (3,))
    layer = conv[rank](3, kernel_size, padding="same", kernel_initializer=Identity(gain=1.5))
    y = ops.convert_to_numpy(layer(x.astype("float32")))
    np.testing.assert_allclose(y, 1.5 * x, atol=1e-5)


@pytest.mark.parametrize("n_in, n_out", [(3, 5), (5, 3)])
def test_identity_conv_partial_identity(n_in, n_out):
    x = np.random.default_rng(1).normal(size=(2, 6, 6, n_in)).astype("float32")
    layer = keras.layers.Conv2D(n_out, 2, padding="same", kernel_initializer=Identity())
    y = ops.convert_to_numpy(layer(x))
    n = min(n_in, n_out)
    np.testing.assert_allclose(y[..., :n], x[..., :n], atol=1e-6)
    np.testing.assert_array_equal(y[..., n:], 0.0)


@pytest.mark.parametrize(
    "layer",
    [
        lambda init: keras.layers.DepthwiseConv2D(3, padding="same", depthwise_initializer=init),
        lambda init: keras.layers.DepthwiseConv1D(2, padding="same", depthwise_initializer=init),
        lambda init: keras.layers.SeparableConv2D(
            4, 3, padding="same", depthwise_initializer=init, pointwise_initializer=Identity()
        ),
    ],
)
def test_identity_depthwise_is_identity_map(layer):
    """The partial identity of a depthwise kernel `(k, k, channels, 1)` kept channel 0
    and zeroed the others: a silent loss for a user expecting a pass-through."""
    init = Identity(gain=1.5, depthwise=True)
    made = layer(init)
    x = np.random.default_rng(0).normal(
        size=(2, 5, 5, 4) if "2D" in type(made).__name__ else (2, 5, 4)
    )
    y = to_numpy(made(x.astype("float32")))
    np.testing.assert_allclose(y, 1.5 * x, rtol=1e-6, atol=1e-6)
    w = to_numpy(init((3, 3, 4, 2)))  # depth_multiplier 2: each filter copies its channel
    assert np.all(w[1, 1] == 1.5) and np.count_nonzero(w) == 8


def test_identity_centre_tap_layout():
    w = to_numpy(Identity()((4, 3, 2, 2)))
    np.testing.assert_array_equal(w[1, 1], np.eye(2))
    w[1, 1] = 0.0
    np.testing.assert_array_equal(w, 0.0)


def test_identity_irnn_simple_rnn_accumulates():
    # IRNN: h_t = relu(x_t + h_{t-1}); for x >= 0 that is the running sum.
    x = np.random.default_rng(2).uniform(size=(2, 6, 3)).astype("float32")
    rnn = keras.layers.SimpleRNN(
        3,
        activation="relu",
        kernel_initializer=Identity(),
        recurrent_initializer=Identity(),
        return_sequences=True,
    )
    y = ops.convert_to_numpy(rnn(x))
    np.testing.assert_allclose(y, np.cumsum(x, axis=1), rtol=1e-5)


@pytest.mark.parametrize("cls, gates", [(keras.layers.LSTM, 4), (keras.layers.GRU, 3)])
def test_identity_recurrent_kernel_identity_in_every_gate(cls, gates):
    units = 3
    layer = cls(units, recurrent_initializer=Identity(gain=0.5))
    layer.build((None, 2, 4))
    kernel = ops.convert_to_numpy(layer.cell.recurrent_kernel)
    assert kernel.shape == (units, gates * units)
    for g in range(gates):
        block = kernel[:, g * units : (g + 1) * units]
        np.testing.assert_array_equal(block, 0.5 * np.eye(units))


# ---------------------------------------------------------------- DeltaOrthogonal


@pytest.mark.parametrize("shape", [CONV1, CONV2, CONV3, (2, 4, 6)])
def test_delta_orthogonal_centre_tap_orthogonal_rest_zero(shape):
    w = to_numpy(DeltaOrthogonal(gain=1.5, seed=3)(shape, dtype=WIDE))
    centre = tuple((k - 1) // 2 for k in shape[:-2])
    q = w[centre]
    atol = 1e-12 if HAS_FLOAT64 else 1e-5
    np.testing.assert_allclose(q @ q.T, 2.25 * np.eye(shape[-2]), atol=atol)
    w[centre] = 0.0
    np.testing.assert_array_equal(w, 0.0)


def test_delta_orthogonal_is_sign_symmetric():
    # Haar-distributed Q: E[Q[0, 0]] = 0. A QR without the sign fix gives
    # Q[0, 0] = -|a00| / ||a0|| < 0 on every draw.
    init = DeltaOrthogonal(seed=keras.random.SeedGenerator(4))
    first = [to_numpy(init(CONV1))[1, 0, 0] for _ in range(40)]
    assert abs(np.mean(first)) < 0.25
    assert 0 < np.mean(np.array(first) > 0) < 1


def test_delta_orthogonal_conv2d_preserves_norm():
    x = np.random.default_rng(3).normal(size=(3, 7, 7, 4)).astype("float32")
    layer = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=DeltaOrthogonal(gain=1.5, seed=0),
    )
    y = ops.convert_to_numpy(layer(x))
    for xi, yi in zip(x, y):  # every input, and every position of it
        np.testing.assert_allclose(
            np.linalg.norm(yi, axis=-1), 1.5 * np.linalg.norm(xi, axis=-1), rtol=1e-5
        )


# ---------------------------------------------------------------- Sparse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [DENSE, CONV1, CONV2])
def test_sparse_nonzero_count_per_unit(shape, dtype):
    w = columns(to_numpy(Sparse(nonzero=3, seed=4)(shape, dtype=dtype)))
    np.testing.assert_array_equal(np.count_nonzero(w, axis=0), 3)


@pytest.mark.parametrize(
    "shape, sparsity, zeros",
    [(DENSE, 0.3, 2), (CONV1, 0.5, 6), (CONV2, 0.0, 0), (CONV2, 0.9, 16), (CONV3, 0.2, 3)],
)
def test_sparse_sparsity_zero_count_per_unit(shape, sparsity, zeros):
    w = columns(to_numpy(Sparse(sparsity=sparsity, seed=5)(shape)))
    fan_in = w.shape[0]
    np.testing.assert_array_equal(np.count_nonzero(w, axis=0), fan_in - zeros)


def test_sparse_values_underflowing_half_precision_stay_nonzero():
    # stddev 1e-6 in float16: ~2% of draws round to 0 without the guard.
    w = to_numpy(Sparse(nonzero=10, stddev=1e-6, seed=6)((50, 40), dtype="float16"))
    np.testing.assert_array_equal(np.count_nonzero(w, axis=0), 10)


@pytest.mark.parametrize("shape, k", [((1, 3), 1), (DENSE, 1), (DENSE, 6), (CONV2, 17)])
def test_sparse_extreme_counts(shape, k):
    w = columns(to_numpy(Sparse(nonzero=k, seed=12)(shape)))
    np.testing.assert_array_equal(np.count_nonzero(w, axis=0), k)


def test_sparse_positions_differ_between_units():
    w = to_numpy(Sparse(nonzero=16, seed=7)((64, 2000)))
    patterns = {tuple(np.flatnonzero(col)) for col in w.T}
    assert len(patterns) == 2000


def test_sparse_default_is_martens_15():
    assert Sparse().nonzero == 15
    w = columns(to_numpy(Sparse(seed=8)(CONV2)))
    np.testing.assert_array_equal(np.count_nonzero(w, axis=0), 15)


def test_sparse_default_stddev_preserves_variance():
    w = to_numpy(Sparse(nonzero=16, seed=9)((64, 2000)))
    nonzeros = w[w != 0]
    assert 0.9 < nonzeros.var() * 16 < 1.1
    x = np.random.default_rng(9).normal(size=(500, 64))
    assert 0.9 < (x @ w).var() < 1.1


def test_sparse_explicit_stddev():
    w = to_numpy(Sparse(sparsity=0.5, stddev=0.3, seed=10)((64, 2000)))
    assert 0.29 < w[w != 0].std() < 0.31


def test_sparse_two_draws_in_one_call_are_independent():
    # Values and positions come from separate draws: with one int seed for
    # both (on JAX uniform and normal correlate ~0.98), the kept positions
    # would hold the smallest values, all negative.
    w = to_numpy(Sparse(sparsity=0.5, seed=11)((64, 2000)))
    nonzeros = w[w != 0]
    assert 0.48 < np.mean(nonzeros > 0) < 0.52
    assert abs(nonzeros.mean()) < 0.01


# ---------------------------------------------------------------- Normalized


@pytest.mark.parametrize("dtype, rtol", [("float16", 2e-3), ("bfloat16", 1e-2), ("float32", 1e-6)])
@pytest.mark.parametrize("shape", [(1, 3), DENSE, CONV2, CONV3])
def test_normalized_unit_norms(shape, dtype, rtol):
    w = columns(to_numpy(Normalized(gain=2.5, seed=12)(shape, dtype=dtype)))
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 2.5, rtol=rtol)


@pytest.mark.skipif(not HAS_FLOAT64, reason="float64 is float32 on this backend")
def test_normalized_float64_exact_norm():
    w = columns(to_numpy(Normalized(seed=13)(CONV2, dtype="float64")))
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-14)


# ---------------------------------------------------------------- ZerO


@pytest.mark.parametrize("shape", [(4, 4), NARROW, CONV1, (2, 2, 2, 3, 3), (3, 6, 2)])
def test_zero_identity_and_partial_identity(shape):
    w = to_numpy(ZerO()(shape))
    centre = tuple((k - 1) // 2 for k in shape[:-2])
    np.testing.assert_array_equal(w[centre], np.eye(*shape[-2:]))
    w[centre] = 0.0
    np.testing.assert_array_equal(w, 0.0)


@pytest.mark.parametrize("n_in, n_out", [(1, 2), (2, 6), WIDEN, (5, 16), (7, 9)])
def test_zero_widening_is_scaled_hadamard(n_in, n_out):
    m = math.ceil(math.log2(n_out))
    c = 2.0 ** (-(m - 1) / 2)
    paper_w = c * sylvester(m)[:n_out, :n_in]  # the paper's (out, in) layout
    w = to_numpy(ZerO()((n_in, n_out), dtype=WIDE))
    np.testing.assert_array_equal(w, paper_w.T.astype(WIDE))


@pytest.mark.parametrize("n_in, n_out", [(2, 4), WIDEN, (5, 16)])
def test_zero_widening_rows_orthogonal_equal_norm(n_in, n_out):
    # Rows here are the paper's columns of W: orthogonal, squared norm 2.
    w = to_numpy(ZerO()((n_in, n_out)))
    np.testing.assert_allclose(w @ w.T, 2.0 * np.eye(n_in), atol=1e-6)


def test_zero_conv_centre_tap_and_determinism():
    w = to_numpy(ZerO()((2, 2) + WIDEN))
    expected = to_numpy(ZerO()(WIDEN))
    np.testing.assert_array_equal(w[0, 0], expected)
    np.testing.assert_array_equal(to_numpy(ZerO()((2, 2) + WIDEN)), w)
    w[0, 0] = 0.0
    np.testing.assert_array_equal(w, 0.0)


# ---------------------------------------------------------------- LSUV


@pytest.mark.parametrize(
    "base, reference",
    [
        ("orthogonal", lambda s: keras.initializers.Orthogonal(seed=s)),
        ("glorot_uniform", lambda s: keras.initializers.GlorotUniform(seed=s)),
        (
            {"class_name": "Orthogonal", "config": {"gain": 2.0}},
            lambda s: keras.initializers.Orthogonal(gain=2.0, seed=s),
        ),
        (Sparse(nonzero=2), lambda s: Sparse(nonzero=2, seed=s)),
        ("keras_initkit>Normalized", lambda s: Normalized(seed=s)),
    ],
)
@pytest.mark.parametrize("shape", [DENSE, CONV2])
def test_lsuv_matches_its_base(base, reference, shape):
    np.testing.assert_array_equal(
        to_numpy(LSUV(base=base, seed=14)(shape)), to_numpy(reference(14)(shape))
    )


def test_lsuv_default_base_is_orthogonal_and_keeps_user_base():
    assert isinstance(LSUV().base, keras.initializers.Orthogonal)
    base = keras.initializers.Orthogonal(seed=1)
    lsuv = LSUV(base=base, seed=2)
    assert base.get_config()["seed"] == 1 and lsuv.base.get_config()["seed"] == 2
    assert LSUV(base=base).base is base
    zeros = LSUV(base="zeros", seed=3)  # a base without a seed ignores it
    np.testing.assert_array_equal(to_numpy(zeros((2, 3))), 0.0)


def test_lsuv_marks_the_layer():
    layer = keras.layers.Dense(3, kernel_initializer=LSUV(seed=1))
    assert isinstance(layer.kernel_initializer, LSUV)
    clone = keras.layers.Dense.from_config(layer.get_config())
    assert isinstance(clone.kernel_initializer, LSUV)
    layer = keras.layers.Dense(3, kernel_initializer="keras_initkit>LSUV")
    assert isinstance(layer.kernel_initializer, LSUV)


# ---------------------------------------------------------------- seeds


SEEDED = RANDOM + [LSUV]
SEED_SHAPE = CONV2


def make(cls, seed):
    return cls(nonzero=5, seed=seed) if cls is Sparse else cls(seed=seed)


@pytest.mark.parametrize("cls", SEEDED, ids=lambda c: c.__name__)
def test_int_seed_same_values_every_call(cls):
    a = make(cls, 21)
    np.testing.assert_array_equal(to_numpy(a(SEED_SHAPE)), to_numpy(a(SEED_SHAPE)))
    b = make(cls, 21)
    np.testing.assert_array_equal(to_numpy(a(SEED_SHAPE)), to_numpy(b(SEED_SHAPE)))
    c = make(cls, 22)
    assert not np.array_equal(to_numpy(a(SEED_SHAPE)), to_numpy(c(SEED_SHAPE)))


@pytest.mark.parametrize("cls", SEEDED, ids=lambda c: c.__name__)
def test_seed_generator_new_values_every_call(cls):
    init = make(cls, keras.random.SeedGenerator(23))
    assert not np.array_equal(to_numpy(init(SEED_SHAPE)), to_numpy(init(SEED_SHAPE)))
    again = make(cls, keras.random.SeedGenerator(23))
    first = to_numpy(make(cls, keras.random.SeedGenerator(23))(SEED_SHAPE))
    np.testing.assert_array_equal(to_numpy(again(SEED_SHAPE)), first)


@pytest.mark.parametrize("cls", RANDOM, ids=lambda c: c.__name__)
def test_no_seed_new_values_every_call(cls):
    init = make(cls, None)
    assert not np.array_equal(to_numpy(init(SEED_SHAPE)), to_numpy(init(SEED_SHAPE)))


def test_draw_seeds_are_distinct_and_stable():
    seeds = draw_seeds(5, 4)
    assert seeds[0] == 5 and len(set(seeds)) == 4 and draw_seeds(5, 4) == seeds
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
    assert not set(draw_seeds(6, 4)) & set(seeds)
    generator = keras.random.SeedGenerator(1)
    assert draw_seeds(generator, 2) == [generator, generator]
    assert draw_seeds(None, 2) == [None, None]


# ---------------------------------------------------------------- serialization

SERIALIZED = [
    Identity(gain=2.0),
    Identity(depthwise=True),
    DeltaOrthogonal(gain=1.5, seed=1),
    Sparse(sparsity=0.25, stddev=0.1, seed=2),
    Sparse(nonzero=3, seed=keras.random.SeedGenerator(3)),
    Normalized(gain=0.5, seed=4),
    ZerO(),
    LSUV(),
    LSUV(base="glorot_normal", seed=5),
    LSUV(base=Sparse(nonzero=2), seed=6),
    LSUV(base=LSUV(base=Normalized(gain=2.0)), seed=7),
]
SERIAL_IDS = [f"{type(i).__name__}{n}" for n, i in enumerate(SERIALIZED)]


def same_values(a, b, shape=CONV1):
    if isinstance(getattr(a, "seed", None), keras.random.SeedGenerator):
        return  # a stream; its position is not part of the config
    if isinstance(a, LSUV) and a.seed is None:
        return  # keeps the base's own (unseeded) seeding
    np.testing.assert_array_equal(to_numpy(a(shape)), to_numpy(b(shape)))


@pytest.mark.parametrize("init", SERIALIZED, ids=SERIAL_IDS)
def test_get_config_from_config(init):
    clone = type(init).from_config(init.get_config())
    assert clone.get_config() == init.get_config()
    same_values(init, clone)


@pytest.mark.parametrize("init", SERIALIZED, ids=SERIAL_IDS)
def test_json_round_trip(init):
    payload = json.dumps(keras.saving.serialize_keras_object(init))
    assert f'"keras_initkit>{type(init).__name__}"' in payload
    clone = keras.saving.deserialize_keras_object(json.loads(payload))
    assert type(clone) is type(init)
    assert clone.get_config() == init.get_config()
    same_values(init, clone)


@pytest.mark.parametrize("name", initializers.__all__)
def test_get_by_registered_name(name):
    init = keras.initializers.get(f"keras_initkit>{name}")
    assert type(init) is getattr(initializers, name)
    assert isinstance(init, keras.initializers.Initializer)


def test_every_public_class_is_registered():
    for name in initializers.__all__:
        cls = getattr(initializers, name)
        assert keras.saving.get_registered_name(cls) == f"keras_initkit>{name}"


def test_keras_file_round_trip_in_fresh_process(tmp_path, run_python):
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=Identity())(inputs)
    x = keras.layers.Conv2D(6, 2, padding="same", kernel_initializer=DeltaOrthogonal(seed=1))(x)
    x = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=ZerO())(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, kernel_initializer=Sparse(nonzero=3, seed=2))(x)
    x = keras.layers.Dense(8, kernel_initializer=Normalized(seed=3))(x)
    x = keras.layers.Dense(5, kernel_initializer=LSUV(base=Sparse(nonzero=2), seed=4))(x)
    outputs = keras.layers.Dense(3, kernel_initializer=LSUV(seed=5))(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    out = run_python(
        f"""
        import numpy as np
        import keras
        import keras_initkit

        model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
        saved = np.load({str(tmp_path / "weights.npz")!r})
        weights = model.get_weights()
        assert len(weights) == len(saved.files)
        for i, w in enumerate(weights):
            np.testing.assert_array_equal(w, saved[f"arr_{{i}}"])
        names = [type(layer.kernel_initializer).__name__
                 for layer in model.layers if hasattr(layer, "kernel_initializer")]
        print(",".join(names))
        last = model.layers[-1].kernel_initializer
        assert isinstance(last, keras_initkit.initializers.LSUV)
        assert isinstance(model.layers[-2].kernel_initializer.base,
                          keras_initkit.initializers.Sparse)
        """
    )
    assert out.strip() == ("Identity,DeltaOrthogonal,ZerO,Sparse,Normalized,LSUV,LSUV")


# ---------------------------------------------------------------- bad input

BAD_ARGS = {
    "gain=0": lambda: Identity(gain=0),
    "depthwise=1": lambda: Identity(depthwise=1),
    "gain=-1": lambda: DeltaOrthogonal(gain=-1.0),
    "gain=nan": lambda: Normalized(gain=float("nan")),
    "gain=inf": lambda: Identity(gain=float("inf")),
    "gain=True": lambda: Normalized(gain=True),
    "gain='1'": lambda: DeltaOrthogonal(gain="1"),
    "sparsity=1.3": lambda: Sparse(sparsity=1.3),
    "sparsity=1.0": lambda: Sparse(sparsity=1.0),
    "sparsity=-0.1": lambda: Sparse(sparsity=-0.1),
    "sparsity=nan": lambda: Sparse(sparsity=float("nan")),
    "sparsity=True": lambda: Sparse(sparsity=True),
    "nonzero=0": lambda: Sparse(nonzero=0),
    "nonzero=2.5": lambda: Sparse(nonzero=2.5),
    "nonzero=True": lambda: Sparse(nonzero=True),
    "nonzero='3'": lambda: Sparse(nonzero="3"),
    "both": lambda: Sparse(sparsity=0.5, nonzero=3),
    "stddev=0": lambda: Sparse(nonzero=1, stddev=0.0),
    "stddev=-1": lambda: Sparse(nonzero=1, stddev=-1.0),
    "stddev=nan": lambda: Sparse(nonzero=1, stddev=float("nan")),
    "stddev=inf": lambda: Sparse(nonzero=1, stddev=float("inf")),
    "seed='3'": lambda: Sparse(nonzero=1, seed="3"),
    "seed=1.5": lambda: Normalized(seed=1.5),
    "seed=True": lambda: DeltaOrthogonal(seed=True),
    "lsuv seed=1.5": lambda: LSUV(seed=1.5),
    "base=unknown": lambda: LSUV(base="no_such_initializer"),
    "base=None": lambda: LSUV(base=None),
    "base=42": lambda: LSUV(base=42),
    "base=function": lambda: LSUV(base=lambda shape, dtype=None: None),
}

BAD_CALLS = {
    "Identity rank 1": (Identity(), (4,)),
    "Identity rank 0": (Identity(), ()),
    "Identity rank 6": (Identity(), (1, 1, 1, 1, 2, 2)),
    "Identity depthwise rank 2": (Identity(depthwise=True), (4, 4)),
    "DeltaOrthogonal rank 2": (DeltaOrthogonal(), (4, 4)),
    "DeltaOrthogonal rank 6": (DeltaOrthogonal(), (1, 1, 1, 1, 2, 2)),
    "DeltaOrthogonal in > out": (DeltaOrthogonal(), (3, 3, 8, 4)),
    "Sparse rank 1": (Sparse(nonzero=1), (4,)),
    "Sparse nonzero > fan_in": (Sparse(nonzero=15), (2, 2, 3, 4)),
    "Sparse no non-zero left": (Sparse(sparsity=0.9), (3, 2)),
    "Normalized rank 1": (Normalized(), (4,)),
    "Normalized rank 0": (Normalized(), ()),
    "ZerO rank 1": (ZerO(), (4,)),
    "ZerO rank 6": (ZerO(), (1, 1, 1, 1, 2, 2)),
    "Identity unknown dimension": (Identity(), (None, 4)),
    "DeltaOrthogonal unknown dimension": (DeltaOrthogonal(), (3, None, 4)),
    "LSUV unknown dimension": (LSUV(), (None, 4)),
}


@pytest.mark.parametrize("make_bad", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_raise_in_init(make_bad):
    with pytest.raises(ValueError, match="Received"):
        make_bad()


@pytest.mark.parametrize("init, shape", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_shapes_raise_in_call(init, shape):
    with pytest.raises(ValueError, match="Received: shape="):
        init(shape)


def test_delta_orthogonal_rank2_points_to_orthogonal():
    with pytest.raises(ValueError, match="keras.initializers.Orthogonal"):
        DeltaOrthogonal()((4, 4))


@pytest.mark.parametrize("name", TABLE)
@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_non_float_dtype_raises(name, dtype):
    init, shapes = TABLE[name]
    with pytest.raises(ValueError, match=f"Received: dtype={dtype}"):
        init()(shapes[0], dtype=dtype)

"""lsuv_init, LSUVReport and LSUVCallback.

Variances are checked independently of `lsuv_init`'s own bookkeeping: a fresh
forward pass re-runs every layer (`probe.call_split`) and measures its output.
"""

import json
import math

import keras
import numpy as np
import pytest

import keras_initkit as ik
from keras_initkit import probe
from keras_initkit.callbacks import LSUVCallback
from keras_initkit.initializers import LSUV
from keras_initkit.lsuv import LSUVWarning

pytestmark = pytest.mark.filterwarnings("error::keras_initkit.lsuv.LSUVWarning")

TOL = 0.1


def normal(stddev=1.0, seed=0):
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed)


def data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def measured(model, x, layers, post=False, mode="inference"):
    """Variance of each layer's (pre-)activation in a real forward pass (in `mode`)."""
    out = {}

    def hook(layer, call, args, kwargs):
        pre, post_ = call_split(layer, call, args, kwargs)
        value = keras.ops.convert_to_numpy(keras.ops.cast(post_ if post else pre, "float32"))
        out.setdefault(layer.name, float(np.var(value.astype(np.float64))))
        return post_

    call_split = probe.call_split
    stochastic = probe.stochastic_layers(model)
    with (
        probe.intercept(layers, hook),
        probe.training_semantics(model, mode, stochastic) as training,
    ):
        model(x, training=training)
    return out


def kernel_layers(model):
    return probe.resolve_layers(model, where=lambda layer: isinstance(layer, probe.KERNEL_LAYERS))


def snapshot(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def assert_identical(before, model):
    after = snapshot(model)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def assert_calibrated(model, x, report, target=1.0, post=False, mode="training"):
    assert report.converged, str(report)
    variances = measured(model, x, kernel_layers(model), post=post, mode=mode)
    names = {r.name for r in report.layers}
    assert names, "no layer calibrated"
    for name in names:
        assert abs(variances[name] - target) <= TOL * target, (name, variances[name])
        # The report's figure is the variance of what was handed on: same as a re-run.
        assert math.isclose(report[name].variance_after, variances[name], rel_tol=1e-3)


# -- models ------------------------------------------------------------------------------


def tanh_mlp(depth=50, width=32, stddev=1.0, marked=False, seed=0):
    inputs = keras.Input((width,))
    h = inputs
    for i in range(depth):
        init = LSUV(seed=seed + i) if marked else normal(stddev, seed + i)
        h = keras.layers.Dense(width, activation="tanh", kernel_initializer=init)(h)
    return keras.Model(inputs, h)


def cnn_bn_residual():
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=normal(0.5, 1))(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("relu")(h)
    for i in range(2):
        r = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=normal(0.5, 10 + i))(h)
        r = keras.layers.BatchNormalization()(r)
        r = keras.layers.Activation("relu")(r)
        r = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=normal(0.5, 20 + i))(r)
        h = keras.layers.Add()([h, r])
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(4, kernel_initializer=normal(2.0, 3))(h)
    return keras.Model(inputs, outputs), data((32, 12, 12, 3))


def nested():
    block = keras.Sequential(
        [
            keras.layers.Dense(16, activation="tanh", kernel_initializer=normal(1.0, i))
            for i in range(3)
        ],
        name="block",
    )
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, kernel_initializer=normal(2.0, 9))(inputs)
    h = block(h)
    outputs = keras.layers.Dense(2, kernel_initializer=normal(1.0, 7))(h)
    return keras.Model(inputs, outputs), data((64, 8))


def multi_input():
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    ha = keras.layers.Dense(8, activation="relu", kernel_initializer=normal(2.0, 1))(a)
    hb = keras.layers.Dense(8, activation="relu", kernel_initializer=normal(0.1, 2))(b)
    h = keras.layers.Concatenate()([ha, hb])
    outputs = keras.layers.Dense(3, kernel_initializer=normal(1.0, 3))(h)
    return keras.Model([a, b], outputs), {"a": data((64, 6), 1), "b": data((64, 4), 2)}


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(16, activation="tanh", kernel_initializer=normal(1.0, 1))
        self.d2 = keras.layers.Dense(16, activation="tanh", kernel_initializer=normal(1.0, 2))
        self.d3 = keras.layers.Dense(2, kernel_initializer=normal(1.0, 3))

    def call(self, x):
        return self.d3(self.d2(self.d1(x)))


def subclassed():
    return Subclassed(), data((64, 10))  # unbuilt: lsuv_init builds it from x


def all_kinds():
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, kernel_initializer=normal(1.0, 1))(inputs)
    h = keras.layers.DepthwiseConv2D(3, depthwise_initializer=normal(1.0, 2))(h)
    h = keras.layers.SeparableConv2D(6, 3, pointwise_initializer=normal(1.0, 3))(h)
    h = keras.layers.Conv2DTranspose(4, 3, kernel_initializer=normal(1.0, 4))(h)
    h = keras.layers.Reshape((12 * 12, 4))(h)
    h = keras.layers.Conv1D(4, 3, kernel_initializer=normal(1.0, 5))(h)
    h = keras.layers.EinsumDense("btc,cd->btd", (None, 5), bias_axes="d")(h)
    return keras.Model(inputs, h), data((8, 16, 16, 3))


# -- convergence ---------------------------------------------------------------------------


def test_deep_tanh_mlp_converges_in_one_pass():
    model, x = tanh_mlp(50), data((128, 32))
    report = ik.lsuv_init(model, x)
    assert len(report.layers) == 50
    assert [r.name for r in report.layers] == [layer.name for layer in kernel_layers(model)]
    assert all(r.iterations >= 1 for r in report.layers)
    assert_calibrated(model, x, report)


@pytest.mark.parametrize("build", [cnn_bn_residual, nested, multi_input, subclassed, all_kinds])
@pytest.mark.parametrize("mode", ["training", "inference"])
def test_every_model_shape_converges(build, mode):
    model, x = build()
    report = ik.lsuv_init(model, x, mode=mode)
    assert_calibrated(model, x, report, mode=mode)


def test_batchnorm_moving_statistics_untouched():
    model, x = cnn_bn_residual()
    bn = [w for w in model.weights if "moving" in w.path]
    before = [np.array(keras.ops.convert_to_numpy(w)) for w in bn]
    ik.lsuv_init(model, x)
    for w, b in zip(bn, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), b)


def test_second_call_changes_nothing(monkeypatch):
    model, x = nested()
    ik.lsuv_init(model, x)
    before = snapshot(model)
    written = []
    commit = ik.lsuv._Calibration.commit

    def spy(self):
        commit(self)
        written.append(len(self.snapshot))

    monkeypatch.setattr(ik.lsuv._Calibration, "commit", spy)
    report = ik.lsuv_init(model, x)
    assert report.converged
    assert all(r.iterations == 0 and r.scale == 1.0 for r in report.layers)
    assert_identical(before, model)
    assert written == [0]  # nothing rescaled: no kernel copied or written
    ik.lsuv_init(model, x, center=True)
    assert written[-1] > 0  # centring writes the biases


def test_lsuv_makes_a_saturated_deep_tanh_net_trainable():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype("float32")
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], digits.target[order]

    def accuracy(calibrate):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((64,))]
            + [keras.layers.Dense(64, "tanh", kernel_initializer=normal(1.0, i)) for i in range(20)]
            + [keras.layers.Dense(10, "softmax", kernel_initializer=normal(0.1, 99))]
        )
        if calibrate:
            assert ik.lsuv_init(model, x[:256]).converged
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
        model.fit(x[:1000], y[:1000], epochs=2, batch_size=32, verbose=0)
        return np.mean(np.argmax(model.predict(x[1400:], verbose=0), -1) == y[1400:])

    plain, calibrated = accuracy(False), accuracy(True)
    assert plain < 0.35  # near chance (0.1): saturated tanh units pass no gradient
    assert calibrated > 0.65 and calibrated > plain + 0.4


# -- options ---------------------------------------------------------------------------------


def test_marked_layers_only_when_any_are_marked():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, kernel_initializer=LSUV(seed=1), name="marked")(inputs)
    h = keras.layers.Dense(16, kernel_initializer=normal(3.0), name="plain")(h)
    model = keras.Model(inputs, keras.layers.Dense(4, kernel_initializer=LSUV(), name="head")(h))
    x = data((64, 8))
    plain = model.get_layer("plain").kernel.numpy().copy()
    report = ik.lsuv_init(model, x)
    assert [r.name for r in report.layers] == ["marked", "head"]
    np.testing.assert_array_equal(model.get_layer("plain").kernel.numpy(), plain)
    # Without marks, every kernel layer.
    model2, _ = nested()
    assert len(ik.lsuv_init(model2, data((64, 8))).layers) == 5


def test_layers_by_name_and_object():
    model, x = nested()
    block = model.get_layer("block")
    inner = block.layers[1]
    report = ik.lsuv_init(model, x, layers=[model.layers[1].name, inner])
    assert [r.name for r in report.layers] == [model.layers[1].name, inner.name]
    with pytest.raises(ValueError, match="Received: 'nope'"):
        ik.lsuv_init(model, x, layers=["nope"])
    with pytest.raises(ValueError, match="Received: 'block'"):
        ik.lsuv_init(model, x, layers=[block.name])  # a nested model, not a layer
    model, x = multi_input()
    with pytest.raises(ValueError, match="kernel variable. Received: layer 'concatenate"):
        ik.lsuv_init(model, x, layers=[model.layers[-2]])


def test_post_activation_measure():
    inputs = keras.Input((16,))
    h = inputs
    for i in range(6):
        h = keras.layers.Dense(32, activation="relu", kernel_initializer=normal(1.0, i))(h)
    model, x = keras.Model(inputs, h), data((128, 16))
    report = ik.lsuv_init(model, x, measure="post_activation", target_variance=0.5)
    assert report.measure == "post_activation"
    assert_calibrated(model, x, report, target=0.5, post=True)


def test_post_activation_unreachable_after_tanh_warns():
    model, x = tanh_mlp(2, 8), data((64, 8))
    with pytest.warns(LSUVWarning) as records:
        report = ik.lsuv_init(model, x, measure="post_activation", max_iterations=3)
    messages = " ".join(str(r.message) for r in records)
    assert "unreachable" in messages and "did not reach" in messages
    assert not report.converged


def test_post_activation_unreachable_is_not_converged_when_saturation_meets_the_tolerance():
    """A wide base drives tanh outputs to variance 0.90, inside the 10% tolerance of 1, by
    saturating ~77% of the units: "unreachable" was warned and "All layers converged"
    reported. The layers whose target is unreachable are not converged."""
    inputs = keras.Input((16,))
    h = inputs
    for i in range(4):
        h = keras.layers.Dense(16, activation="tanh", kernel_initializer=normal(1.0, i))(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    x = data((128, 16))
    with pytest.warns(LSUVWarning) as records:
        report = ik.lsuv_init(model, x, measure="post_activation", verbose=0)
    messages = " ".join(str(r.message) for r in records)
    assert "unreachable" in messages and "did not reach variance 1 ± 10%" in messages
    tanh = [r for r in report.layers if r.name != model.layers[-1].name]
    assert any(abs(r.variance_after - 1.0) <= 0.1 for r in tanh)  # within tolerance
    assert not any(r.converged for r in tanh) and not report.converged
    assert [r for r in report.layers if r.name == model.layers[-1].name][0].converged


def test_frozen_layers_are_left_unless_named():
    """A pretrained base frozen for fine-tuning: `lsuv_init` rescaled its kernels."""
    base = tanh_mlp(2, 8)
    base.trainable = False
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(base(inputs)))
    x = data((64, 8))
    before = [keras.ops.convert_to_numpy(w).copy() for w in base.weights]
    with pytest.warns(LSUVWarning, match=r"leaves 2 frozen layer\(s\) \(trainable=False\)"):
        report = ik.lsuv_init(model, x, verbose=0)
    assert [r.name for r in report.layers] == ["head"]
    for old, w in zip(before, base.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), old)
    first = base.layers[1].name  # layers[0] is the InputLayer
    named = ik.lsuv_init(model, x, layers=[first], verbose=0)
    assert [r.name for r in named.layers] == [first]
    with pytest.raises(ValueError, match="every kernel layer is frozen"):
        with pytest.warns(LSUVWarning):
            ik.lsuv_init(base, x, verbose=0)


def test_center_zeroes_unit_means():
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(16, kernel_initializer=normal(1.0), bias_initializer="ones")
    model, x = keras.Model(inputs, dense(inputs)), data((256, 8)) + 2.0
    report = ik.lsuv_init(model, x, center=True)
    out = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    assert report.converged and abs(out.var() - 1.0) <= TOL


def test_nonzero_bias_is_accounted_for():
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(
        32, kernel_initializer=normal(2.0), bias_initializer=normal(0.5, seed=3)
    )
    model, x = keras.Model(inputs, dense(inputs)), data((256, 8))
    bias = dense.bias.numpy().copy()
    report = ik.lsuv_init(model, x)
    np.testing.assert_array_equal(dense.bias.numpy(), bias)  # biases are left alone
    assert_calibrated(model, x, report)


def test_shared_layer_calibrated_on_first_call():
    shared = keras.layers.Dense(8, kernel_initializer=normal(2.0))
    inputs = keras.Input((8,))
    model = keras.Model(inputs, shared(shared(inputs)))
    report = ik.lsuv_init(model, data((64, 8)))
    assert [r.name for r in report.layers] == [shared.name]


class ScaledTanh(keras.layers.Layer):
    """A custom kernel layer: lsuv_init calls it again for each rescale. Its variance
    saturates below 4: a target of 1 takes several rescales."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 8), initializer=normal(3.0, 9))

    def call(self, x):
        return 2.0 * keras.ops.tanh(keras.ops.matmul(x, self.kernel))


def every_kind_of_site():
    """Zero biases (the closed-form rescale), non-zero ones (the loop), batch norm, a
    custom layer (re-run), a shared layer and a dead one."""
    keras.utils.set_random_seed(11)
    shared = keras.layers.Dense(8, activation="tanh", kernel_initializer=normal(2.0, 3))
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=normal(2.0, 1))(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8, "tanh", kernel_initializer=normal(0.1, 2), bias_initializer="ones")(h)
    h = shared(shared(h))
    h = ScaledTanh(name="custom")(h)
    h = keras.layers.Dense(4, kernel_initializer=normal(5.0, 4))(h)
    return keras.Model(inputs, keras.layers.Dense(2, kernel_initializer="zeros")(h))  # dead


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "kwargs", [{}, {"center": True}, {"measure": "post_activation", "target_variance": 0.25}]
)
def test_the_pass_is_pure_compiled_and_eager_agree(kwargs):
    """The calibration pass changes nothing while it runs (its loops are
    `ops.while_loop`s, its writes stay in its scope), so compiled as one function (as on
    JAX by default; `jit_compile=True` elsewhere) it gives what it gives eagerly: the
    same report and the same weights."""
    x = data((32, 6, 6, 2), seed=5) * 2.0
    results = {}
    for compiled in (False, True):
        model = every_kind_of_site()
        layers = [*kernel_layers(model), model.get_layer("custom")]
        with pytest.warns(LSUVWarning, match="zero variance"):  # the dead layer
            report = ik.lsuv_init(
                model, x, layers=layers, verbose=0, jit_compile=compiled, **kwargs
            )
        results[compiled] = report, snapshot(model)
    (eager, weights), (traced, traced_weights) = results[False], results[True]
    assert [r.skipped for r in eager.layers] == [None] * 5 + ["zero variance"]
    assert any(r.iterations > 1 for r in eager.layers)  # a loop ran, not only closed forms
    for a, b in zip(eager.layers, traced.layers, strict=True):
        assert (a.skipped, a.iterations, a.converged) == (b.skipped, b.iterations, b.converged)
        assert a.scale == pytest.approx(b.scale, rel=1e-4)
        np.testing.assert_allclose(a.variance_after, b.variance_after, rtol=1e-4)
    for a, b in zip(weights, traced_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not np.array_equal(a, b) for a, b in zip(snapshot(every_kind_of_site()), weights))


def test_mixed_float16_policy():
    inputs = keras.Input((16,))
    h = inputs
    for i in range(4):
        h = keras.layers.Dense(
            32, "tanh", kernel_initializer=normal(1.0, i), dtype="mixed_float16"
        )(h)
    model, x = keras.Model(inputs, h), data((128, 16))
    report = ik.lsuv_init(model, x)
    assert all(layer.kernel.dtype == "float32" for layer in kernel_layers(model))
    assert report.converged
    for r in report.layers:
        assert abs(r.variance_after - 1.0) <= TOL


@pytest.mark.parametrize("kind", ["dataset", "pydataset"])
def test_dataset_inputs(kind):
    model, x = nested()
    y = np.zeros((64, 2), "float32")
    if kind == "dataset":
        tf = pytest.importorskip("tensorflow")  # tf.data needs TensorFlow
        source = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    else:

        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return 2

            def __getitem__(self, i):
                return x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]

        source = Batches()
    report = ik.lsuv_init(model, source)
    assert report.converged
    assert "1 batch" in report.source
    assert_calibrated(model, x[:32], report)


# -- warnings and skips ----------------------------------------------------------------------


def test_zero_variance_layer_skipped_with_warning():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, kernel_initializer=normal(1.0), name="fine")(inputs)
    h = keras.layers.Dense(8, kernel_initializer="zeros", name="dead")(h)
    model, x = keras.Model(inputs, h), data((64, 8))
    with pytest.warns(LSUVWarning, match="'dead': zero variance"):
        report = ik.lsuv_init(model, x)
    assert report["dead"].skipped == "zero variance" and not report["dead"].converged
    assert report["fine"].converged and not report.converged
    np.testing.assert_array_equal(model.get_layer("dead").kernel.numpy(), 0.0)


def test_not_converged_warning_names_layers():
    # A bias of variance ~9 alone exceeds the target: no kernel scale reaches it.
    inputs = keras.Input((8,))
    h = keras.layers.Dense(64, bias_initializer=normal(3.0, 1), name="biased")(inputs)
    model = keras.Model(inputs, h)
    with pytest.warns(LSUVWarning, match="did not reach .* biased"):
        report = ik.lsuv_init(model, data((64, 8)), max_iterations=4)
    assert report["biased"].iterations == 4 and not report.converged


# -- failures leave weights untouched --------------------------------------------------------


class Bomb(keras.layers.Layer):
    """Raises `error` on every call once armed (Keras may call a layer any number of
    times while it builds a model: symbolically, and to infer output specs)."""

    def __init__(self, error, **kwargs):
        super().__init__(**kwargs)
        self.error, self.armed = error, False

    def call(self, x):
        if self.armed:
            raise self.error
        return x


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_mid_way_restores_every_weight(error):
    inputs = keras.Input((8,))
    h = inputs
    for i in range(3):
        h = keras.layers.Dense(8, "tanh", kernel_initializer=normal(2.0, i), name=f"d{i}")(h)
    bomb = Bomb(error)
    h = bomb(h)
    h = keras.layers.Dense(4, kernel_initializer=normal(2.0, 5))(h)
    model = keras.Model(inputs, h)
    bomb.armed = True  # lsuv_init's pass through the bomb raises
    before = snapshot(model)
    with pytest.raises(type(error)):
        ik.lsuv_init(model, data((64, 8)))
    assert_identical(before, model)


@pytest.mark.parametrize(
    "x, match",
    [
        (np.full((16, 8), np.nan, "float32"), "finite"),
        (np.zeros((0, 8), "float32"), "at least one sample"),
        (np.zeros((16, 5), "float32"), "input"),
        (np.zeros((16, 8, 1), "float32"), "input"),
    ],
    ids=["nan", "empty", "wrong-width", "wrong-rank"],
)
def test_bad_data_raises_before_any_change(x, match):
    model, _ = nested()
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        ik.lsuv_init(model, x)
    assert_identical(before, model)


def test_wrong_shape_for_a_subclassed_model():
    model, x = subclassed()
    model(x)
    before = snapshot(model)
    with pytest.raises(ValueError):
        ik.lsuv_init(model, data((16, 7)))
    assert_identical(before, model)


def test_no_target_layers():
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    before = snapshot(model)
    with pytest.raises(ValueError, match="no layer to calibrate"):
        ik.lsuv_init(model, data((8, 4)))
    assert_identical(before, model)


BAD = [
    ({"target_variance": 0}, "target_variance=0"),
    ({"target_variance": -1.0}, "target_variance=-1.0"),
    ({"target_variance": float("nan")}, "target_variance=nan"),
    ({"tolerance": 0.0}, "tolerance=0.0"),
    ({"tolerance": float("inf")}, "tolerance=inf"),
    ({"max_iterations": 0}, "max_iterations=0"),
    ({"max_iterations": 2.5}, "max_iterations=2.5"),
    ({"max_iterations": True}, "max_iterations=True"),
    ({"measure": "output"}, "measure='output'"),
    ({"center": "yes"}, "center='yes'"),
    ({"verbose": 3}, "verbose=3"),
    ({"jit_compile": "yes"}, "jit_compile='yes'"),
    ({"jit_compile": None}, "jit_compile=None"),
]


@pytest.mark.parametrize("kwargs, received", BAD)
def test_bad_arguments(kwargs, received):
    model, x = nested()
    with pytest.raises(ValueError, match=f"Received: {received}"):
        ik.lsuv_init(model, x, **kwargs)
    with pytest.raises(ValueError, match=f"Received: {received}"):
        LSUVCallback(x, **kwargs)


def test_callback_rejects_unknown_keyword():
    with pytest.raises(ValueError, match="Received: tolerence"):
        LSUVCallback(data((4, 8)), tolerence=0.1)


# -- report, progress bar --------------------------------------------------------------------


def test_report_table_and_dict():
    model, x = nested()
    report = ik.lsuv_init(model, x)
    text = str(report)
    for r in report.layers:
        assert r.name in text
    assert "64 samples" in text and "All layers converged." in text
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["converged"] is True and as_dict["source"] == report.source
    assert [d["name"] for d in as_dict["layers"]] == [r.name for r in report.layers]
    assert as_dict["layers"][0]["variance_before"] == report.layers[0].variance_before


@pytest.mark.backend_agnostic
def test_report_notes_the_batch_norm_statistics_it_leaves_stale():
    model, x = cnn_bn_residual()
    report = ik.lsuv_init(model, x, verbose=0)
    assert report.notes and "recalibrate_batchnorm" in report.notes[0]
    assert "3 batch-norm layer(s)" in report.notes[0]
    assert "note: the model's 3 batch-norm" in str(report)
    assert report.to_dict()["notes"] == list(report.notes)
    without = ik.lsuv_init(*nested(), verbose=0)  # no batch norm: nothing to note
    assert without.notes == () and "note:" not in str(without)
    again = ik.lsuv_init(model, x, verbose=0, tolerance=0.5)  # converged: nothing rescaled
    assert all(r.scale == 1.0 for r in again.layers if not r.skipped) and again.notes == ()


@pytest.mark.backend_agnostic
def test_progress_bar(capsys):
    model, x = tanh_mlp(12, 8), data((32, 8))
    ik.lsuv_init(model, x, verbose=0)
    assert capsys.readouterr().out == ""
    ik.lsuv_init(model, x, verbose=1, jit_compile=False)
    out = capsys.readouterr().out
    assert "12/12" in out and "/13" not in out
    # Compiled: a step per layer traced, and one more for compiling and running the pass.
    ik.lsuv_init(model, x, verbose=1, jit_compile=True)
    out = capsys.readouterr().out
    assert "13/13" in out and "/12" not in out
    ik.lsuv_init(model, x)  # "auto": stdout is not a terminal under pytest
    assert capsys.readouterr().out == ""


# -- callback and serialization ----------------------------------------------------------------


def test_callback_runs_once_unless_refit():
    model, x = nested()
    model.compile("sgd", "mse")
    y = np.zeros((64, 2), "float32")
    callback = LSUVCallback(x, verbose=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    first = callback.report
    assert first is not None and first.converged
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert callback.report is first
    # A new callback on the same model: its trained weights are kept too (a training
    # script that builds its callbacks anew for every fit).
    fresh = LSUVCallback(x, verbose=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[fresh])
    assert fresh.report is None
    again = LSUVCallback(x, refit=True, verbose=0)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[again])
    first_refit = again.report
    model.fit(x, y, epochs=1, verbose=0, callbacks=[again])
    assert again.report is not first_refit


@pytest.mark.backend_agnostic
def test_callback_keeps_the_weights_of_a_model_that_has_trained(capsys):
    """A model trained without the callback (or loaded from a checkpoint with its
    optimizer), then fit with it: calibrating would undo the training."""
    model, x = nested()
    model.compile("sgd", "mse")
    y = np.zeros((64, 2), "float32")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    trained = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    callback = LSUVCallback(x, verbose=1)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[callback], shuffle=False)
    assert callback.report is None
    out = capsys.readouterr().out
    assert "has trained already (2 optimizer steps): its weights are kept" in out
    assert "refit=True" in out
    # What the fit itself changed, and nothing more: the same fit without the callback.
    twin, _ = nested()
    twin.compile("sgd", "mse")
    twin.set_weights(trained)
    twin.optimizer.build(twin.trainable_variables)
    twin.optimizer.iterations.assign(2)
    twin.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    for ours, theirs in zip(model.weights, twin.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs), rtol=1e-6
        )
    silent = LSUVCallback(x, verbose=0)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[silent])
    assert silent.report is None and capsys.readouterr().out == ""
    forced = LSUVCallback(x, refit=True, verbose=0)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[forced])
    assert forced.report is not None


def test_callback_prints_report(capsys):
    model, x = nested()
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((64, 2)), epochs=1, verbose=0, callbacks=[LSUVCallback(x, verbose=1)])
    assert "All layers converged." in capsys.readouterr().out


def test_keras_round_trip_in_fresh_process(tmp_path, run_python):
    model, x = tanh_mlp(3, 8, marked=True), data((64, 8))
    ik.lsuv_init(model, x)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(x)))
    out = run_python(
        f"""
        import keras, numpy as np
        import keras_initkit
        model = keras.saving.load_model({str(path)!r})
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        init = model.layers[1].kernel_initializer
        assert type(init).__name__ == "LSUV", init
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), y, rtol=1e-5, atol=1e-6)
        print("ok", keras_initkit.lsuv_init(model, x, verbose=0).converged)
        """
    )
    assert out.split()[-2:] == ["ok", "True"]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("jit_compile", ["auto", True, False])
def test_jit_compile_chooses_how_the_pass_runs(monkeypatch, jit_compile):
    """`"auto"` compiles where the backend says (JAX); True and False force it."""
    compiled = []
    build = probe.backend.current().compile_function

    def spy(fn, model):
        compiled.append(model)
        return build(fn, model)

    monkeypatch.setattr(probe.backend.current(), "compile_function", spy)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, kernel_initializer=normal(3.0))]
    )
    report = ik.lsuv_init(model, data((64, 8)), verbose=0, jit_compile=jit_compile)
    assert report.converged
    expected = probe.backend.current().COMPILES_LSUV if jit_compile == "auto" else jit_compile
    assert compiled == ([model] if expected else [])

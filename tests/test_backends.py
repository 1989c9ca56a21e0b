"""Every Keras backend: initializers, lsuv_init, the probe, and the monitors' event files.

Two kinds of tests:

- `backend_agnostic` ones run on the backend the session selected (`tox -e py311`:
  TensorFlow, `tox -e jax`, `tox -e torch`).
- Cross-backend ones (TensorFlow session only) run the same measurement in a fresh
  interpreter per other backend with TensorFlow made unimportable, and compare: the
  deterministic initializers give identical kernels, the probe and `lsuv_init` the same
  numbers, the monitors the same TensorBoard tags and steps, all without TensorFlow.
"""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import keras_initkit as ik
from keras_initkit import summary
from keras_initkit.callbacks import TrainingMonitor
from keras_initkit.probe import Probe, Reducer

BACKEND = keras.backend.backend()


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _events(log_dir):
    acc = event_accumulator.EventAccumulator(
        os.path.join(str(log_dir), "initkit"), size_guidance={"tensors": 0, "histograms": 0}
    )
    acc.Reload()
    return acc


class OutputVariance(Reducer):
    """Variance of a layer's pre-activation: re-measures what lsuv_init calibrated."""

    name = "variance"
    merge = {"pre": "mean"}

    def reduce(self, site, inputs, pre, outputs):
        pre = keras.ops.cast(pre, "float32")
        return {"pre": keras.ops.mean(keras.ops.square(pre - keras.ops.mean(pre)))}

    def finalize(self, site, stats):
        return {"pre": float(stats["pre"])}


# ------------------------------------------------------------------ this backend

LAYER_CASES = {
    "Identity": ik.initializers.Identity(),
    "ZerO": ik.initializers.ZerO(),
    "DeltaOrthogonal": ik.initializers.DeltaOrthogonal(seed=3),
    "Sparse": ik.initializers.Sparse(nonzero=5, seed=3),
    "Normalized": ik.initializers.Normalized(gain=2.0, seed=3),
    "LSUV": ik.initializers.LSUV(seed=3),
}


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("name", LAYER_CASES)
def test_initializer_in_a_conv_layer(name):
    """A 3x3 'same' conv with 4 -> 4 channels, kernel from each initializer."""
    layer = keras.layers.Conv2D(
        4, 3, padding="same", use_bias=False, kernel_initializer=LAYER_CASES[name]
    )
    x = _normal(2, 5, 5, 4)
    y = _numpy(layer(x))
    w = _numpy(layer.kernel)
    assert np.all(np.isfinite(y))
    if name in ("Identity", "ZerO"):  # in == out: the identity map, exactly
        np.testing.assert_array_equal(y, x)
    elif name == "DeltaOrthogonal":  # an orthogonal map at every pixel: norms kept
        np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), 1e-5)
    elif name == "Sparse":
        np.testing.assert_array_equal(np.count_nonzero(w.reshape(-1, 4), axis=0), 5)
    elif name == "Normalized":
        np.testing.assert_allclose(np.linalg.norm(w.reshape(-1, 4), axis=0), 2.0, rtol=1e-5)
    else:  # LSUV: orthogonal columns of the flattened (36, 4) kernel
        flat = w.reshape(-1, 4)
        np.testing.assert_allclose(flat.T @ flat, np.eye(4), atol=1e-5)


@pytest.mark.backend_agnostic
def test_lsuv_init_converges_and_re_measures_within_tolerance():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(),
            *[
                keras.layers.Dense(
                    24,
                    activation="tanh",
                    kernel_initializer=ik.initializers.LSUV(seed=i),
                    name=f"dense{i}",
                )
                for i in range(6)
            ],
            keras.layers.Dense(1, kernel_initializer=ik.initializers.LSUV(seed=9), name="head"),
        ]
    )
    x = _normal(64, 6, 6, 3, seed=2) * 3.0
    report = ik.lsuv_init(model, x, tolerance=0.05, verbose=0)
    assert report.converged
    assert [r.name for r in report.layers] == [f"dense{i}" for i in range(6)] + ["head"]
    measured = Probe(model, [OutputVariance()], layers=[r.name for r in report.layers]).run(x)
    for r in report.layers:
        assert abs(measured.metrics[r.name]["pre"] - 1.0) <= 0.05 * 1.001


@pytest.mark.backend_agnostic
def test_to_numpy_is_a_copy_that_later_updates_leave_alone():
    """torch's `Tensor.numpy` shares memory, and an optimizer updates in place: a
    snapshot (suggest_initializer's start weights) must not follow."""
    from keras_initkit.probe.backend import to_numpy

    variable = keras.Variable(np.ones((2, 3), "float32"))
    tensor = keras.ops.ones((4,))
    snapshot, values = to_numpy(variable), to_numpy(tensor)
    variable.assign_add(np.ones((2, 3), "float32"))
    assert isinstance(snapshot, np.ndarray) and snapshot.dtype == np.float32
    np.testing.assert_array_equal(snapshot, np.ones((2, 3)))
    np.testing.assert_array_equal(values, np.ones(4))
    bf16 = to_numpy(keras.ops.ones((2,), "bfloat16"))
    assert str(bf16.dtype) == "bfloat16"


@pytest.mark.backend_agnostic
@pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")
def test_no_numpy_copy_keyword_warnings_from_our_conversions(tmp_path):
    """NumPy 2 warns ("__array__ implementation doesn't accept a copy keyword") for every
    Keras Variable (TensorFlow, torch) and torch tensor that `keras.ops.convert_to_numpy`
    converts: 600 DeprecationWarnings per `diagnose(model, x, y)` on NASNetMobile, which
    pytest shows a user's test suite. Ours read values through `backend.to_numpy`."""
    import warnings

    inputs = keras.Input((8, 8, 3))
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    h = keras.layers.LSTM(4)(keras.layers.Reshape((2, 2))(h))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    y = np.arange(32) % 3
    monitor = TrainingMonitor((x, y), gradients=True, log_dir=str(tmp_path), verbose=0)

    def copy_warnings(*calls):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for call in calls:
                call()
        return [str(w.message)[:80] for w in caught if "copy keyword" in str(w.message)]

    ours = copy_warnings(
        lambda: ik.diagnose(model, x, y),
        lambda: ik.lsuv_init(model, x, verbose=0),
        lambda: ik.recalibrate_batchnorm(model, x, verbose=0),
    )
    assert not ours, f"{len(ours)} warnings: {ours[0]}"
    # Keras' own torch fit converts its logs so (11 here): the monitor adds none.
    fit = dict(x=x, y=y, epochs=2, batch_size=8, verbose=0)
    monitored = copy_warnings(lambda: model.fit(**fit, callbacks=[monitor]))
    assert len(monitored) == len(copy_warnings(lambda: model.fit(**fit)))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow warning")
def test_no_retracing_warnings_from_keras_grouped_convolutions_in_eager_passes():
    """Eagerly, Keras' TensorFlow grouped convolution builds a new `tf.function` per call,
    and TensorFlow warns "triggered tf.function retracing" from the fifth: `lsuv_init`
    and the first `diagnose(model, x, y)` on ConvNeXtTiny printed two such warnings about
    code the user never called. Other TensorFlow warnings still show, retracing of other
    functions included."""
    import logging

    import tensorflow as tf

    inputs = keras.Input((8, 8, 4))
    h = inputs
    for _ in range(6):  # ConvNeXt's depthwise convolutions are grouped ones
        h = keras.layers.Conv2D(4, 3, padding="same", groups=2, activation="relu")(h)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 4)).astype("float32")
    y = np.arange(8) % 3

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    records = Records()
    tf.get_logger().addHandler(records)
    user_function = (
        "5 out of the last 5 calls to <function step at 0x1> triggered tf.function retracing."
    )
    try:
        ik.lsuv_init(model, x, verbose=0)
        ik.diagnose(model, x, y)
        with ik.probe.backend.current().eager_pass():
            tf.get_logger().warning(user_function)
    finally:
        tf.get_logger().removeHandler(records)
    assert records.messages == [user_function]


@pytest.mark.backend_agnostic
@pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")
def test_monitors_write_event_files_read_back_by_tensorboard(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh", name="tanh"),
            keras.layers.Dense(16, activation="relu", name="relu"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(32, 8, seed=3), _normal(32, 1, seed=4)
    monitor = TrainingMonitor(
        (x, y), log_dir=tmp_path, update_freq=1, histograms=True, gradients=True, verbose=0
    )
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[monitor], verbose=0)
    writer = summary.create_writer(tmp_path)
    expected = (
        summary.TFSummaryWriter if BACKEND == "tensorflow" else summary.EventFileSummaryWriter
    )
    assert type(writer) is expected
    acc = _events(tmp_path)
    tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["histograms"])
    wanted = {
        "saturated_fraction/tanh",
        "dead_fraction/relu",
        "bn_mean_shift/bn",
        "activation_std/head",
        "activations/tanh",
        "gradient_norm/tanh",
        "update_ratio/head",
    }
    assert wanted <= tags
    steps = [e.step for e in acc.Tensors("dead_fraction/relu")]
    assert steps == list(range(9))  # train begin, then every one of 4 + 4 batches
    last = acc.Tensors("dead_fraction/relu")[-1].tensor_proto.float_val[0]
    assert last == pytest.approx(monitor.latest["relu"]["dead_fraction"])


# ------------------------------------------------------------------ across backends

# Run in this process and, verbatim, in a child per backend: results compared as JSON.
MEASURE = """
import os, sys, tempfile
import keras
import numpy as np
import keras_initkit as ik
from keras_initkit.probe import ActivationMoments, DeadUnits, Probe, Saturation
from keras_initkit.probe.gradients import layer_gradients
from tensorboard.backend.event_processing import event_accumulator


def measure():
    out = {"backend": keras.backend.backend()}
    numpy = lambda t: keras.ops.convert_to_numpy(t).tolist()
    out["identity"] = numpy(ik.initializers.Identity(gain=2.0)((3, 3, 2, 4)))
    out["zero"] = numpy(ik.initializers.ZerO()((3, 3, 3, 8)))
    rng = np.random.default_rng(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="tanh"),
        keras.layers.Dense(16, activation="relu", name="relu"),
        keras.layers.Dense(4, activation="sigmoid", name="sigmoid"),
        keras.layers.Dense(1, name="head"),
    ])
    model.set_weights(
        [(rng.normal(size=w.shape) * 0.8).astype("float32") for w in model.get_weights()]
    )
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    result = Probe(model, [ActivationMoments(), Saturation(), DeadUnits()]).run(x)
    out["probe"] = {
        site: {k: float(v) for k, v in values.items() if np.ndim(v) == 0}
        for site, values in result.metrics.items()
    }
    model.compile(optimizer="sgd", loss="mse")
    gradients = layer_gradients(model, (x, y))
    out["gradients"] = {s: m["gradient_norm"] for s, m in gradients.metrics.items()}
    report = ik.lsuv_init(model, x, verbose=0)
    out["lsuv"] = {r.name: [r.scale, r.variance_after, r.iterations] for r in report.layers}
    log_dir = tempfile.mkdtemp()
    monitor = ik.callbacks.TrainingMonitor(
        (x, y), log_dir=log_dir, update_freq=3, histograms=True, gradients=True, verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, callbacks=[monitor], verbose=0)
    acc = event_accumulator.EventAccumulator(
        os.path.join(log_dir, "initkit"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    out["tags"] = sorted(acc.Tags()["tensors"])
    out["steps"] = [e.step for e in acc.Tensors("saturated_fraction/tanh")]
    out["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    return out
"""

CHILD = (
    "import sys\n"
    "sys.modules['tensorflow'] = None  # unimportable: `import tensorflow` raises ImportError\n"
    + MEASURE
    + "\nimport json\nprint('RESULT' + json.dumps(measure()))\n"
)


@pytest.fixture(scope="module")
def reference():
    namespace = {}
    exec(MEASURE, namespace)
    return json.loads(json.dumps(namespace["measure"]()))


def _available(backend):
    module = {"jax": "jax", "torch": "torch"}[backend]
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(BACKEND != "tensorflow", reason="compares other backends with TensorFlow")
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")
def test_backend_without_tensorflow_matches_tensorflow(backend, reference, run_python, monkeypatch):
    if not _available(backend):
        pytest.skip(f"{backend} is not installed")
    monkeypatch.setenv("KERAS_BACKEND", backend)
    stdout = run_python(CHILD, timeout=400)
    other = json.loads(stdout.split("RESULT", 1)[1])
    assert other["backend"] == backend
    assert not other["tensorflow_imported"]
    # Deterministic initializers: the very same kernels.
    assert other["identity"] == reference["identity"]
    assert other["zero"] == reference["zero"]
    # The probe: the same statistics (ulp-level differences in tanh/sigmoid).
    assert other["probe"].keys() == reference["probe"].keys()
    for site, values in reference["probe"].items():
        assert other["probe"][site].keys() == values.keys()
        for metric, value in values.items():
            assert other["probe"][site][metric] == pytest.approx(value, rel=1e-4, abs=2e-3)
    # Gradient norms of the same loss.
    assert other["gradients"].keys() == reference["gradients"].keys()
    for site, norm in reference["gradients"].items():
        assert other["gradients"][site] == pytest.approx(norm, rel=1e-4)
    # lsuv_init: the same scales and variances, in as many iterations.
    assert other["lsuv"].keys() == reference["lsuv"].keys()
    for name, (scale, variance, iterations) in reference["lsuv"].items():
        assert other["lsuv"][name][0] == pytest.approx(scale, rel=1e-4)
        assert other["lsuv"][name][1] == pytest.approx(variance, rel=1e-4)
        assert other["lsuv"][name][2] == iterations
    # The monitors: the same event tags at the same steps, written without TensorFlow.
    assert other["tags"] == reference["tags"]
    assert other["steps"] == reference["steps"] == [0, 3, 4, 6, 8]

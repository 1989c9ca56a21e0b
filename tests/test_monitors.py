"""Training monitors: the statistics they report, TensorBoard, logs, warnings, no side effects."""

import csv
import inspect
import math
import os
import pathlib
import warnings

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util

import keras_initkit
from keras_initkit.callbacks import (
    BatchNormMonitor,
    DeadUnitMonitor,
    GradientMonitor,
    InitkitWarning,
    SaturationMonitor,
    TensorBoardLogs,
    TrainingMonitor,
)
from keras_initkit.dashboard import events
from keras_initkit.health import DEFAULT_THRESHOLDS
from keras_initkit.probe.gradients import layer_gradients

MONITORS = [SaturationMonitor, DeadUnitMonitor, BatchNormMonitor, TrainingMonitor]
# Unhealthy models on purpose: findings not asserted with pytest.warns are expected.
pytestmark = [
    pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning"),
    pytest.mark.backend_agnostic,  # every test here passes on TensorFlow, JAX and torch
]


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _measure(monitor, model):
    """One measurement through the Keras callback interface, without fitting."""
    monitor.set_model(model)
    monitor.on_train_begin()
    monitor.on_train_end()
    return monitor.latest


def _mixed_model(momentum=0.99):
    """tanh, ReLU, batch norm, dropout and a linear head: something for every monitor."""
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="tanh", name="tanh")(inputs)
    h = keras.layers.Dense(16, activation="relu", name="relu")(h)
    h = keras.layers.BatchNormalization(momentum=momentum, name="bn")(h)
    h = keras.layers.Dropout(0.3, seed=5)(h)
    outputs = keras.layers.Dense(1, name="head")(h)
    return keras.Model(inputs, outputs)


def _events(log_dir):
    acc = event_accumulator.EventAccumulator(
        os.path.join(str(log_dir), "initkit"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    return acc


def _series(acc, tag):
    return [(e.step, float(np.asarray(e.tensor_proto.float_val)[0])) for e in acc.Tensors(tag)]


# The statistics --------------------------------------------------------------------------


def test_forced_dead_layer_is_exactly_dead_and_he_layer_is_alive():
    # Two inputs: positive data into a negative kernel (dead by construction), and
    # zero-mean data into a He-initialized layer.
    pos, gauss = keras.Input((6,), name="pos"), keras.Input((6,), name="gauss")
    dead = keras.layers.Dense(
        12, activation="relu", kernel_initializer=keras.initializers.Constant(-0.5), name="dead"
    )(pos)
    alive = keras.layers.Dense(
        12, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed=1), name="he"
    )(gauss)
    outputs = keras.layers.Dense(1)(keras.layers.Concatenate()([dead, alive]))
    model = keras.Model({"pos": pos, "gauss": gauss}, outputs)
    rng = np.random.default_rng(0)
    data = {
        "pos": rng.uniform(0.01, 1.0, size=(256, 6)).astype("float32"),
        "gauss": _normal(256, 6),
    }
    monitor = DeadUnitMonitor(data, verbose=1)
    with pytest.warns(InitkitWarning, match=r"dead \(step 0\): 100% of units dead \(12 of 12\)"):
        latest = _measure(monitor, model)
    assert latest["dead"]["dead_fraction"] == 1.0
    assert latest["dead"]["firing_rate"] == 0.0
    assert latest["he"]["dead_fraction"] == 0.0
    assert [f.layer for f in monitor.findings] == ["dead"]


def test_tanh_saturation_matches_gaussian_prediction_and_lsuv_removes_it():
    keras.utils.set_random_seed(3)
    depth, delta = 6, 0.01
    model = keras.Sequential(
        [keras.Input((16,))]
        + [
            keras.layers.Dense(
                64,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomNormal(stddev=1.0),
            )
            for _ in range(depth)
        ]
        + [keras.layers.Dense(1)]
    )
    x = _normal(512, 16)
    monitor = SaturationMonitor(x, delta=delta, verbose=1)
    with pytest.warns(InitkitWarning, match="tanh outputs saturated"):
        latest = _measure(monitor, model)
    # A value is saturated when |tanh z| >= 1 - 2·delta (delta is relative to the
    # range 2), i.e. |z| >= atanh(1 - 2·delta); z ~ N(0, σ²) with σ measured here.
    threshold = math.atanh(1 - 2 * delta)
    a = x
    for layer in model.layers[:depth]:
        kernel, bias = layer.get_weights()
        z = a @ kernel + bias
        a = np.tanh(z)
        predicted = math.erfc(threshold / (z.std() * math.sqrt(2)))
        if layer is not model.layers[0]:  # deep layers: inputs are ±1-ish, z Gaussian
            assert latest[layer.name]["saturated_fraction"] == pytest.approx(predicted, abs=0.03)
            assert predicted > 0.5
    keras_initkit.lsuv_init(model, x, verbose=0)
    latest = _measure(monitor, model)
    for layer in model.layers[:depth]:
        assert latest[layer.name]["saturated_fraction"] < 0.1


def test_narrow_deep_relu_net_is_flagged_dead():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2,))]
        + [
            keras.layers.Dense(2, activation="relu", kernel_initializer="he_normal")
            for _ in range(20)
        ]
        + [keras.layers.Dense(1)]
    )
    monitor = DeadUnitMonitor(_normal(256, 2), verbose=1)
    with pytest.warns(InitkitWarning, match="of units dead"):
        latest = _measure(monitor, model)
    deepest = [latest[layer.name]["dead_fraction"] for layer in model.layers[10:20]]
    assert max(deepest) >= 0.5
    assert {f.rule for f in monitor.findings} == {"dead_fraction"}


def test_batchnorm_momentum_flagged_after_5_steps_not_after_many():
    keras.utils.set_random_seed(1)
    model = _mixed_model(momentum=0.99)
    # Several steps per execution: callbacks see every 5th batch, steps still count 1 each
    # (Keras allows only 1 on torch).
    per_execution = 1 if keras.backend.backend() == "torch" else 5
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=per_execution)
    monitor = BatchNormMonitor(_normal(128, 8), verbose=1)
    x, y = _normal(40, 8, seed=1), _normal(40, 1, seed=2)
    with pytest.warns(InitkitWarning, match=r"after 5 updates at momentum 0.99, .* 95%"):
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert [f.rule for f in monitor.findings] == ["bn_init_weight"]
    assert monitor.latest["bn"]["bn_init_weight"] == pytest.approx(0.99**5)
    x, y = _normal(300, 8, seed=3), _normal(300, 1, seed=4)
    model.fit(x, y, batch_size=1, epochs=1, callbacks=[monitor], verbose=0)
    # Steps continue across fits: 5 + 300 updates; 0.99^305 < 0.05.
    assert monitor.latest["bn"]["bn_init_weight"] == pytest.approx(0.99**305)
    assert "bn_init_weight" not in {f.rule for f in monitor.findings}


@pytest.mark.parametrize("how", ["fine-tuned", "recalibrated", "trained, recalibrated"])
def test_batchnorm_statistics_set_before_training_have_no_initial_weight(how, tmp_path):
    """A pretrained model fine-tuned with a new optimizer (its iterations start at 0),
    or one recalibrated before training (after some steps or none): the moving
    statistics are not their initial values, so none weigh in them. The monitor said
    "after 5 updates at momentum 0.99, the initial value still weighs 95%" and advised
    recalibrating; the mismatch rules judge them from the start instead."""
    keras.utils.set_random_seed(1)
    model = _mixed_model(momentum=0.99)
    x, y = _normal(40, 8, seed=1), _normal(40, 1, seed=2)
    model.compile(optimizer="sgd", loss="mse")
    if how == "fine-tuned":
        model.fit(x, y, batch_size=4, epochs=40, verbose=0)  # 400 steps: trained statistics
        model.compile(optimizer="sgd", loss="mse")  # a new optimizer: iterations 0
    if how == "trained, recalibrated":
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 5 steps: far from trained
    if "recalibrated" in how:
        keras_initkit.recalibrate_batchnorm(model, x, verbose=0)
    monitor = BatchNormMonitor(x, verbose=0, log_dir=tmp_path)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert "bn_init_weight" not in monitor.latest["bn"]
    assert monitor.findings == []
    assert events.read_run(str(tmp_path / "initkit")).judged_from == {}  # from the start
    # Statistics moved far off the data's after training began are judged at once.
    model.get_layer("bn").moving_mean.assign(np.full(16, 50.0, "float32"))
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert {f.rule for f in monitor.findings} == {"bn_mean_shift"}


def test_batchnorm_initial_weight_near_one_is_not_rounded_to_all_of_it():
    """MobileNetV3's momentum 0.999: after 4 updates the console said "weighs 100%"
    while the dashboard showed 0.996."""
    model = _mixed_model(momentum=0.999)
    model.compile(optimizer="sgd", loss="mse")
    monitor = BatchNormMonitor(_normal(64, 8), verbose=0)
    model.fit(_normal(32, 8), _normal(32, 1), batch_size=8, callbacks=[monitor], verbose=0)
    (finding,) = monitor.findings
    assert "after 4 updates at momentum 0.999, the initial value still weighs 99.6%" in (
        finding.message
    )


def test_batchnorm_initial_weight_counts_from_the_step_the_statistics_were_initial(tmp_path):
    """A fresh batch-norm layer in a model whose optimizer already took 100 steps: its
    initial values weigh momentum^n for the n steps since, not momentum^(100 + n)."""
    keras.utils.set_random_seed(1)
    model = _mixed_model(momentum=0.99)
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.iterations.assign(100)
    monitor = BatchNormMonitor(_normal(64, 8), verbose=0, log_dir=tmp_path)
    x, y = _normal(40, 8, seed=1), _normal(40, 1, seed=2)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert monitor.latest["bn"]["bn_init_weight"] == pytest.approx(0.99**5)
    assert [f.rule for f in monitor.findings] == ["bn_init_weight"]
    assert "after 5 updates" in monitor.findings[0].message
    wait = {"bn": 100 + 299}  # 0.99^299 <= 0.05 < 0.99^298
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.judged_from == {"bn_mean_shift": wait, "bn_std_ratio": wait}
    # Recalibrated between two fits under the same monitor: judged from then on.
    keras_initkit.recalibrate_batchnorm(model, x, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert "bn_init_weight" not in monitor.latest["bn"] and monitor.findings == []
    assert events.read_run(str(tmp_path / "initkit")).judged_from == {}


def test_a_failed_recalibration_leaves_the_initial_weight_counted(monkeypatch):
    """`recalibrate_batchnorm` restores every layer when it fails after assigning (here
    interrupted while reporting), and its mark that it set the statistics too."""
    model = _mixed_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(40, 8), _normal(40, 1)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 5 steps
    trained = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_initkit.batchnorm, "RecalibrationReport", interrupted)
    with pytest.raises(KeyboardInterrupt):
        keras_initkit.recalibrate_batchnorm(model, _normal(16, 8), verbose=0)
    monkeypatch.undo()
    restored = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)
    np.testing.assert_array_equal(restored, trained)
    monitor = BatchNormMonitor(_normal(64, 8), verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert monitor.latest["bn"]["bn_init_weight"] == pytest.approx(0.99**10)


def test_batchnorm_mismatch_matches_definition_and_frozen_layer_is_flagged():
    model = _mixed_model()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(16, 0.5, "float32"))
    bn.moving_variance.assign(np.full(16, 4.0, "float32"))
    bn.trainable = False
    x = _normal(200, 8)
    monitor = BatchNormMonitor(x, verbose=1)
    with pytest.warns(InitkitWarning, match="trainable=False"):
        latest = _measure(monitor, model)
    bn_input = keras.Model(model.inputs, model.get_layer("relu").output).predict(x, verbose=0)
    mu, s2 = bn_input.mean(axis=0), bn_input.var(axis=0)
    d = (0.5 - mu) / np.sqrt(s2 + bn.epsilon)
    r = np.sqrt((4.0 + bn.epsilon) / (s2 + bn.epsilon))
    assert latest["bn"]["bn_mean_shift"] == pytest.approx(np.mean(np.abs(d)), rel=1e-4)
    assert latest["bn"]["bn_std_ratio"] == pytest.approx(
        np.exp(np.max(np.abs(np.log(r)))), rel=1e-4
    )
    assert "bn_init_weight" not in latest["bn"]  # frozen: no updates to count
    assert [f.rule for f in monitor.findings] == ["frozen"]


def test_gradient_monitor_matches_gradient_probe_and_flags_vanishing_and_exploding():
    keras.utils.set_random_seed(2)
    small = keras.initializers.RandomNormal(stddev=0.05)
    model = keras.Sequential(
        [keras.Input((8,))]
        + [keras.layers.Dense(16, activation="sigmoid", kernel_initializer=small) for _ in range(8)]
        + [keras.layers.Dense(1, name="out")]
    )
    model.compile(optimizer=keras.optimizers.SGD(1e4), loss="mse")
    data = (_normal(64, 8), _normal(64, 1, seed=1))
    monitor = GradientMonitor(data, verbose=1)
    with pytest.warns(InitkitWarning):
        latest = _measure(monitor, model)
    expected = layer_gradients(model, data).metrics
    for name, values in expected.items():
        assert latest[name]["gradient_norm"] == pytest.approx(values["gradient_norm"], rel=1e-5)
        assert latest[name]["update_ratio"] == pytest.approx(values["update_ratio"], rel=1e-5)
    rules = {(f.layer, f.rule) for f in monitor.findings}
    first = model.layers[0].name
    assert (first, "vanishing") in rules
    assert ("out", "exploding") in rules  # lr 1e4: an SGD step larger than the weights
    assert ("out", "vanishing") not in rules


def test_layers_argument_skips_what_a_monitor_cannot_judge():
    model = _mixed_model()
    monitor = SaturationMonitor(_normal(64, 8), layers=["tanh", "relu"], verbose=0)
    with pytest.warns(InitkitWarning, match="cannot judge layer 'relu'"):
        latest = _measure(monitor, model)
    assert set(latest) == {"tanh"}  # absent, not a fake 0
    latest = _measure(TrainingMonitor(_normal(64, 8), layers=["head"], verbose=0), model)
    assert set(latest) == {"head"} and set(latest["head"]) == {"activation_mean", "activation_std"}


# Model kinds -----------------------------------------------------------------------------


def test_nested_subclassed_and_mixed_precision_models():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="tanh", name="dense")], name="block"
    )
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="dense")(inner(inputs))
    nested = keras.Model(inputs, outputs)
    latest = _measure(SaturationMonitor(_normal(64, 8), verbose=0), nested)
    assert set(latest) == {"block/dense", "dense"}

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
            self.out = keras.layers.Dense(1, name="out")

        def call(self, x):
            return self.out(self.hidden(x))

    model = Subclassed()
    model(_normal(2, 8))
    latest = _measure(TrainingMonitor(_normal(64, 8), verbose=0), model)
    assert set(latest) == {"hidden", "out"} and "dead_fraction" in latest["hidden"]

    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = _mixed_model()
        model.compile(optimizer="adam", loss="mse")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    x = _normal(64, 8)
    monitor = TrainingMonitor(x, update_freq=2, verbose=0)
    model.fit(x, _normal(64, 1), batch_size=16, callbacks=[monitor], verbose=0)
    reference = keras.Model(model.inputs, model.get_layer("tanh").output).predict(x, verbose=0)
    expected = np.mean(np.abs(reference.astype("float32")) >= 0.98)
    assert monitor.latest["tanh"]["saturated_fraction"] == pytest.approx(expected, abs=1e-6)
    assert set(monitor.latest) == {"tanh", "relu", "bn", "head"}


# TensorBoard, logs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_log_dir(tmp_path_factory):
    """Two fits (steps continue) with TrainingMonitor next to keras' TensorBoard."""
    pytest.importorskip("tensorflow")  # keras.callbacks.TensorBoard writes with tf.summary
    log_dir = tmp_path_factory.mktemp("logs")
    keras.utils.set_random_seed(4)
    model = _mixed_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = _normal(64, 8), _normal(64, 1, seed=1)
    monitor = TrainingMonitor(
        x[:32], log_dir=log_dir, update_freq=3, histograms=True, gradients=False, verbose=0
    )
    csv_path = log_dir / "history.csv"
    histories = []
    for _ in range(2):
        histories.append(
            model.fit(
                x,
                y,
                batch_size=16,
                epochs=2,
                validation_data=(x[:16], y[:16]),
                callbacks=[
                    # Keras' TensorBoard first, as documented: it copies every logs key
                    # it sees into its own run as epoch_<key>.
                    keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq=2),
                    monitor,
                    keras.callbacks.CSVLogger(str(csv_path), append=True),
                ],
                verbose=0,
            )
        )
    return log_dir, monitor, histories, csv_path


def test_epoch_monitor_leaves_keras_batch_hooks_asynchronous_and_counts_steps(tmp_path):
    model = _mixed_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(48, 8), _normal(48, 1)
    epoch = TrainingMonitor(x[:16], log_dir=tmp_path, gradients=False, verbose=0)
    per_batch = TrainingMonitor(x[:16], update_freq=2, gradients=False, verbose=0)
    assert epoch.async_safe and not per_batch.async_safe
    threaded = keras.src.backend.IS_THREAD_SAFE  # Keras' condition for async dispatch
    assert keras.callbacks.CallbackList([epoch], model=model)._async_train == threaded
    assert not keras.callbacks.CallbackList([per_batch], model=model)._async_train
    for epochs in (2, 1):  # 3 batches an epoch; steps continue across fits
        model.fit(x, y, batch_size=16, epochs=epochs, callbacks=[epoch], verbose=0)
    steps = [step for step, _ in _series(_events(tmp_path), "activation_std/relu")]
    # Train begin and epoch ends, step 6 written once. Each fit writes its own event file
    # and the reader loads files of one second in name order, not creation order: sorted.
    assert sorted(steps) == [0, 3, 6, 9] and len(steps) == 4


def test_tags_steps_and_values_read_back_with_tensorboard_reader(fitted_log_dir):
    log_dir, monitor, _, _ = fitted_log_dir
    acc = _events(log_dir)
    tags = set(acc.Tags()["tensors"])
    expected = {
        "activation_mean/tanh",
        "activation_std/relu",
        "saturated_fraction/tanh",
        "saturated_low/tanh",
        "abs_p98/tanh",
        "dead_fraction/relu",
        "firing_rate/relu",
        "bn_mean_shift/bn",
        "bn_std_ratio/bn",
        "bn_init_weight/bn",
        "activation_mean/head",
        "activations/tanh",
        "activations/relu",
    }
    assert expected <= tags
    assert not any(t.endswith("/dropout") or "dead_fraction/tanh" == t for t in tags)
    # 4 batches per epoch, 2 epochs per fit, 2 fits: global steps 0..16; updates at
    # train begin, every 3 batches and at each epoch end, each step written once.
    steps = [step for step, _ in _series(acc, "saturated_fraction/tanh")]
    assert steps == [0, 3, 4, 6, 8, 9, 12, 15, 16]
    last = _series(acc, "bn_mean_shift/bn")[-1][1]
    assert last == pytest.approx(monitor.latest["bn"]["bn_mean_shift"], rel=1e-6)
    metadata = acc.SummaryMetadata("activations/tanh").plugin_data.plugin_name
    assert metadata == "histograms"
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["saturated_fraction"] == ["^saturated_fraction/"]
    assert charts["bn_std_ratio"] == ["^bn_std_ratio/"]
    # Nothing of ours in keras' own runs, and theirs are intact.
    train = event_accumulator.EventAccumulator(str(log_dir / "train"), size_guidance={"tensors": 0})
    train.Reload()
    assert not any(
        "fraction" in t or t.startswith(("bn_", "activation")) for t in train.Tags()["tensors"]
    )
    assert "epoch_loss" in train.Tags()["tensors"]


def test_history_and_csv_logger_get_per_layer_keys(fitted_log_dir):
    _, monitor, histories, csv_path = fitted_log_dir
    history = histories[-1].history
    for key in [
        "saturated_fraction/tanh",
        "dead_fraction/relu",
        "bn_mean_shift/bn",
        "bn_std_ratio/bn",
    ]:
        assert len(history[key]) == 2
    assert history["dead_fraction/relu"][-1] == monitor.latest["relu"]["dead_fraction"]
    assert "activation_mean/tanh" not in history  # only headline metrics go to logs
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 2 and float(rows[-1]["saturated_fraction/tanh"]) == pytest.approx(
        history["saturated_fraction/tanh"][-1]
    )


def _wide(depth):
    """`depth` ReLU layers, each followed by batch norm: 3 logged values per pair."""
    inputs = keras.Input((8,))
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(8, activation="relu", name=f"relu{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_many_layers_log_each_metrics_worst_unless_every_layer_is_asked_for(capsys):
    """Keras' progress bar prints every value of the logs: 10,000 characters per epoch
    on EfficientNetB0. Beyond 20 values the logs hold each metric's worst layer, and
    the monitor says so once; `add_to_logs=True` keeps every layer's."""
    x, y = _normal(32, 8), _normal(32, 1)
    model = _wide(3)  # 9 values: every layer's
    history = model.fit(x, y, callbacks=[TrainingMonitor(x, verbose=0)], verbose=0)
    assert {"dead_fraction/relu0", "bn_std_ratio/bn2"} <= set(history.history)
    model = _wide(8)  # 24 values
    monitor = TrainingMonitor(x)
    history = model.fit(x, y, epochs=2, callbacks=[monitor], verbose=2)
    worst = {"dead_fraction/max", "bn_mean_shift/max", "bn_std_ratio/max"}
    assert set(history.history) == {"loss"} | worst
    latest = monitor.latest
    assert history.history["bn_std_ratio/max"][-1] == max(
        latest[f"bn{i}"]["bn_std_ratio"] for i in range(8)
    )
    said = capsys.readouterr().out
    assert said.count("not its 24 per-layer values; add_to_logs=True adds those") == 1
    model.fit(x, y, callbacks=[TrainingMonitor(x)], verbose=0)  # no progress bar: not said
    assert "per-layer values" not in capsys.readouterr().out
    monitor = TrainingMonitor(x, add_to_logs=True, verbose=0)
    history = model.fit(x, y, callbacks=[monitor], verbose=0)
    assert len(history.history) == 1 + 24
    with pytest.raises(
        ValueError, match=r"Argument `add_to_logs` must be .*Received: add_to_logs='all'"
    ):
        TrainingMonitor(x, add_to_logs="all")


def test_no_logs_when_opted_out_and_no_files_without_log_dir(tmp_path, monkeypatch):
    model = _mixed_model()
    model.compile(optimizer="sgd", loss="mse")
    x = _normal(32, 8)
    monitor = DeadUnitMonitor(x, add_to_logs=False, verbose=0)
    monkeypatch.chdir(tmp_path)
    history = model.fit(x, _normal(32, 1), batch_size=16, callbacks=[monitor], verbose=0)
    assert set(history.history) == {"loss"}
    assert monitor.latest["relu"]["dead_fraction"] >= 0
    assert os.listdir(tmp_path) == []


# Never change training; no leaks ---------------------------------------------------------


def _train(callbacks):
    keras.utils.set_random_seed(11)
    model = _mixed_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x, y = _normal(48, 8, seed=5), _normal(48, 1, seed=6)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=True, callbacks=callbacks, verbose=0)
    return [np.array(v) for v in model.variables + model.optimizer.variables]


def test_fit_with_all_monitors_ends_with_bit_identical_weights(tmp_path):
    x, y = _normal(32, 8, seed=7), _normal(32, 1, seed=8)
    every = [
        TrainingMonitor((x, y), log_dir=tmp_path, update_freq=1, histograms=True, gradients=True),
        SaturationMonitor(x, update_freq=2),
        DeadUnitMonitor(x, update_freq=3),
        BatchNormMonitor(x, update_freq=1),
        GradientMonitor((x, y), update_freq=2),
    ]
    for monitor in every:
        monitor.verbose = 0
    with_monitors = _train(every)
    without = _train([])
    assert len(with_monitors) == len(without)
    for a, b in zip(with_monitors, without):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_no_file_handles_leak_over_50_fits(tmp_path):
    model = _mixed_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(8, 8), _normal(8, 1)
    monitor = TrainingMonitor(x, log_dir=tmp_path, verbose=0)

    def fit():
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)

    fit()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        fit()
    assert len(os.listdir("/proc/self/fd")) <= before
    # Steps continue across fits, each written once (files of one second load in name
    # order, which is not creation order past 10 writers: compare sorted).
    steps = [s for s, _ in _series(_events(tmp_path), "dead_fraction/relu")]
    assert sorted(steps) == list(range(52))


def test_warns_once_per_layer_per_fit():
    pos = keras.Input((4,))
    dead = keras.layers.Dense(
        4, activation="relu", kernel_initializer=keras.initializers.Constant(-1.0), name="dead"
    )(pos)
    model = keras.Model(pos, keras.layers.Dense(1)(dead))
    model.compile(optimizer="sgd", loss="mse")
    x = np.abs(_normal(24, 4)) + 0.1
    monitor = DeadUnitMonitor(x, update_freq=1, verbose=1)
    for _ in range(2):
        with pytest.warns(InitkitWarning) as record:
            model.fit(x, _normal(24, 1), batch_size=8, epochs=2, callbacks=[monitor], verbose=0)
        assert len([w for w in record if "dead (step" in str(w.message)]) == 1


def test_findings_of_one_rule_are_one_warning_at_the_users_line_and_verbose_0_is_silent():
    inputs = keras.Input((4,))
    h = inputs
    for i in range(12):  # each layer's output is 0 for every positive input
        h = keras.layers.Dense(
            4,
            activation="relu",
            kernel_initializer=keras.initializers.Constant(-1.0),
            name=f"dead{i}",
        )(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.abs(_normal(16, 4)) + 0.1, _normal(16, 1)

    monitor = DeadUnitMonitor(x)
    with pytest.warns(InitkitWarning) as record:
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    found = [w for w in record if issubclass(w.category, InitkitWarning)]
    assert len(found) == 1  # one rule: one warning for the 12 layers, as ranges
    assert str(found[0].message) == (
        "dead_fraction at step 0: dead0 … dead11 (12 layers); worst dead0: 100% of units "
        "dead (4 of 4) — try He or LSUV initialization (keras_initkit.lsuv_init), "
        "a leaky activation, or a lower learning rate."
    )
    assert found[0].filename == __file__  # the fit call above, not keras_initkit's code
    assert [f.layer for f in monitor.findings] == [f"dead{i}" for i in range(12)]
    assert monitor.findings[0].message == (
        "dead0 (step 0): 100% of units dead (4 of 4) — try He or LSUV initialization "
        "(keras_initkit.lsuv_init), a leaky activation, or a lower learning rate."
    )

    quiet = DeadUnitMonitor(x, verbose=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[quiet], verbose=0)
    assert not [w for w in record if issubclass(w.category, InitkitWarning)]
    assert len(quiet.findings) == 12  # recorded all the same


def _documented_scale_monitor():
    """`ScaleMonitor` exactly as docs/monitors.md ("Writing a monitor") defines it."""
    page = (pathlib.Path(__file__).parents[1] / "docs" / "monitors.md").read_text()
    code = page.split("## Writing a monitor", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(code, namespace)
    return namespace["ScaleMonitor"]


@pytest.mark.parametrize("pairs", [False, True])
def test_a_custom_monitor_reports_logs_and_warns_through_the_hooks(tmp_path, pairs):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                8, kernel_initializer=keras.initializers.Constant(100.0), name="loud"
            ),
            keras.layers.Dense(1, kernel_initializer="zeros", trainable=False, name="quiet"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = _normal(32, 8)
    ScaleMonitor = _documented_scale_monitor()
    if pairs:  # a monitor written before fixes were separate: (rule, message) pairs

        class ScaleMonitor(ScaleMonitor):  # noqa: F811
            def check(self, site, scalars, step, epoch_end):
                for rule, observation, _ in super().check(site, scalars, step, epoch_end):
                    yield rule, observation

    monitor = ScaleMonitor(x, log_dir=tmp_path)
    with pytest.warns(InitkitWarning, match=r"^loud \(step 0\): output std \d+") as record:
        history = model.fit(x, _normal(32, 1), epochs=1, callbacks=[monitor], verbose=0)
    assert [f.layer for f in monitor.findings] == ["loud"]
    message = str([w for w in record if issubclass(w.category, InitkitWarning)][0].message)
    assert message == monitor.findings[0].message  # one layer: the finding's own line
    fix = " — lower the learning rate or use a scaled initialization."
    assert message.endswith(fix) != pairs
    assert history.history["activation_std/loud"][0] > 100
    assert history.history["activation_std/quiet"][0] == 0.0
    assert {"activation_std/loud", "activation_std/quiet"} <= set(
        _events(tmp_path).Tags()["tensors"]
    )


# Bad input: ValueError at construction or train begin, never mid-training ---------------


@pytest.mark.parametrize("cls", MONITORS)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"update_freq": 0}, "update_freq=0"),
        ({"update_freq": -3}, "update_freq=-3"),
        ({"update_freq": 2.5}, "update_freq=2.5"),
        ({"update_freq": "batches"}, "update_freq='batches'"),
        ({"update_freq": True}, "update_freq=True"),
        ({"layers": [3]}, "Received: 3"),
        ({"verbose": 5}, "verbose=5"),
    ],
)
def test_bad_common_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        cls(_normal(8, 8), **kwargs)
    assert "Received" in str(info.value)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (SaturationMonitor, {"saturation_threshold": 1.5}),
        (SaturationMonitor, {"saturation_threshold": -0.1}),
        (SaturationMonitor, {"delta": 0.7}),
        (DeadUnitMonitor, {"dead_threshold": 2}),
        (DeadUnitMonitor, {"dead_threshold": -1}),
        (BatchNormMonitor, {"init_weight_threshold": 1.01}),
        (BatchNormMonitor, {"mean_shift_threshold": -0.5}),
        (BatchNormMonitor, {"std_ratio_threshold": 0.9}),
        (TrainingMonitor, {"dead_threshold": 1.2}),
        (TrainingMonitor, {"vanishing_threshold": 3.0}),
        (GradientMonitor, {"exploding_threshold": 0}),
        (GradientMonitor, {"exploding_ratio_threshold": -1}),
        (TrainingMonitor, {"exploding_ratio_threshold": 0}),
    ],
)
def test_bad_thresholds(cls, kwargs):
    name, value = next(iter(kwargs.items()))
    data = (_normal(8, 8), _normal(8, 1))
    with pytest.raises(ValueError, match=f"Received: {name}={value}"):
        cls(data, **kwargs)


@pytest.mark.parametrize(
    "data, match",
    [
        (np.full((4, 8), np.nan, "float32"), "must be finite"),
        (np.array([[1.0, np.inf]], "float32"), "must be finite"),
        (np.zeros((0, 8), "float32"), "at least one sample"),
        ("not data", "Received: data of type str"),
    ],
)
def test_bad_probe_data_at_construction(data, match):
    with pytest.raises(ValueError, match=match) as info:
        TrainingMonitor(data)
    assert "Received" in str(info.value)


def test_gradient_monitor_needs_targets():
    with pytest.raises(ValueError, match="need targets.*Received"):
        GradientMonitor(_normal(8, 8))
    with pytest.raises(ValueError, match="need targets.*Received"):
        TrainingMonitor(_normal(8, 8), gradients=True)


def test_unwritable_log_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="Received: log_dir=.*is a file"):
        TrainingMonitor(_normal(8, 8), log_dir=blocker / "logs")
    with pytest.raises(ValueError, match="Received: log_dir=5"):
        TrainingMonitor(_normal(8, 8), log_dir=5)


@pytest.mark.parametrize("problem", ["shape", "layer", "log_dir"])
def test_problems_found_at_train_begin_stop_before_any_step(tmp_path, problem):
    model = _mixed_model()
    model.compile(optimizer="sgd", loss="mse")
    kwargs = {"verbose": 0}
    data = _normal(16, 8)
    if problem == "shape":
        data, match = (
            _normal(16, 5),
            r"does not fit the model's input .*\(None, 8\)\. Received: an array of shape \(16, 5\)",
        )
    elif problem == "layer":
        kwargs["layers"], match = ["tanh", "no_such_layer"], "Received: 'no_such_layer'"
    else:
        kwargs["log_dir"], match = tmp_path / "logs", "Received: log_dir="
    monitor = TrainingMonitor(data, **kwargs)
    if problem == "log_dir":
        (tmp_path / "logs").write_text("now a file")
    with pytest.raises(ValueError, match=match):
        model.fit(_normal(16, 8), _normal(16, 1), callbacks=[monitor], verbose=0)
    assert int(model.optimizer.iterations) == 0


class _Subclassed(keras.Model):
    """No declared inputs: probe data meets the model in the forward pass only."""

    def __init__(self):
        super().__init__(name="subclassed")
        self.hidden = keras.layers.Dense(4, activation="relu")
        self.head = keras.layers.Dense(1)

    def call(self, x):
        return self.head(self.hidden(x))


def test_probe_data_that_fails_the_forward_pass_gets_one_line_of_why():
    """A model without declared inputs meets the probe data in its forward pass: Keras'
    error was wrapped whole (92 lines on torch, the tensor's values included)."""
    model = _Subclassed()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(_normal(16, 8), _normal(16, 1), verbose=0)
    monitor = TrainingMonitor(_normal(16, 5), verbose=0)
    with pytest.raises(ValueError) as raised:
        model.fit(_normal(16, 8), _normal(16, 1), callbacks=[monitor], verbose=0)
    text = str(raised.value)
    assert text.startswith("Argument `data` does not fit model") and "forward pass failed" in text
    assert text.endswith("Received: data with input shape(s) (16, 5) (16 samples in 1 batch(es))")
    assert "\n" not in text and "\x1b" not in text and len(text) < 600, text


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "make", [GradientMonitor, lambda data: TrainingMonitor(data, gradients=True)]
)
def test_an_unbuilt_subclassed_model_is_built_for_its_gradients(make):
    """Keras' TensorFlow `fit` builds a subclassed model in its first step, after
    `on_train_begin`: a monitor with gradients raised "The model must be built before
    its gradients can be measured" at its first update. It builds the model on its data,
    and data that cannot build it is a clear error naming `data`."""
    x, y = _normal(16, 8), _normal(16, 1)
    model = _Subclassed()
    model.compile(optimizer="sgd", loss="mse")
    monitor = make((x, y))
    monitor.verbose = 0
    model.fit(x, y, callbacks=[monitor], verbose=0, epochs=1, batch_size=8)
    assert len(monitor.latest) == 2, monitor.latest  # both Dense layers, measured
    assert all(values["gradient_norm"] > 0 for values in monitor.latest.values())
    unbuilt = _Subclassed()
    unbuilt.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"^Argument `data` does not fit the model: "):
        unbuilt.fit(x, y, callbacks=[make(({"wrong": x}, y))], verbose=0)


def test_targets_that_do_not_fit_the_loss_are_named():
    """One-hot targets for a sparse loss: `diagnose` raised Keras' error from deep in
    its ops, and the monitor blamed the inputs ("does not fit model ... Received: data
    with input shape(s)"). Both name the targets and the loss now, and nothing of the
    model changes."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = _normal(16, 8)
    onehot = np.eye(3, dtype="float32")[np.arange(16) % 3]
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    expected = r"^The targets, of shape\(s\) \(16, 3\), do not fit the model's loss for outputs"
    with pytest.raises(ValueError, match=expected):
        keras_initkit.diagnose(model, x, onehot)
    monitor = TrainingMonitor((x, onehot), gradients=True, verbose=0)
    with pytest.raises(ValueError, match=expected):
        model.fit(x, np.arange(16) % 3, callbacks=[monitor], verbose=0)
    for old, new in zip(before, [keras.ops.convert_to_numpy(v) for v in model.variables]):
        np.testing.assert_array_equal(new, old)
    # Labels beyond the classes: JAX computed a loss on them without a word.
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\) .*labels from 0 to 15"):
        keras_initkit.diagnose(model, x, np.arange(16))
    ignoring = keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)
    keras_initkit.diagnose(model, x, np.arange(16) % 3 - (np.arange(16) == 0), loss=ignoring)


def test_the_monitor_checks_its_fixed_probe_labels_once(monkeypatch, tmp_path):
    """Reading a staged label tensor back is a device sync: the checks of the monitor's
    fixed probe batches run at its first update only. (They read the labels with
    `keras.ops.convert_to_numpy`: `np.asarray` of a CUDA tensor raises, which broke
    every gradient monitor on a torch GPU.)"""
    from keras_initkit.callbacks.measurement import Measurement
    from keras_initkit.probe.gradients import GradientProbe

    seen, runs = [], []
    check, run = GradientProbe._check_labels, Measurement.run
    monkeypatch.setattr(
        GradientProbe, "_check_labels", lambda self, b: seen.append(len(b)) or check(self, b)
    )
    monkeypatch.setattr(Measurement, "run", lambda self, *a: runs.append(1) or run(self, *a))
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = _normal(64, 8), np.arange(64) % 3
    monitor = TrainingMonitor(
        (x[:16], y[:16]), gradients=True, update_freq=2, log_dir=str(tmp_path), verbose=0
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[monitor], verbose=0)
    assert len(runs) >= 4 and seen == [1], (runs, seen)


# One set of default thresholds --------------------------------------------------------


@pytest.mark.parametrize(
    "monitor, argument, key",
    [
        (SaturationMonitor, "saturation_threshold", "saturated_fraction"),
        (DeadUnitMonitor, "dead_threshold", "dead_fraction"),
        (BatchNormMonitor, "mean_shift_threshold", "bn_mean_shift"),
        (BatchNormMonitor, "std_ratio_threshold", "bn_std_ratio"),
        (GradientMonitor, "exploding_threshold", "update_ratio"),
        (TrainingMonitor, "saturation_threshold", "saturated_fraction"),
        (TrainingMonitor, "dead_threshold", "dead_fraction"),
        (TrainingMonitor, "mean_shift_threshold", "bn_mean_shift"),
        (TrainingMonitor, "std_ratio_threshold", "bn_std_ratio"),
        (TrainingMonitor, "exploding_threshold", "update_ratio"),
        (GradientMonitor, "exploding_ratio_threshold", "exploding_gradient_ratio"),
        (TrainingMonitor, "exploding_ratio_threshold", "exploding_gradient_ratio"),
    ],
)
def test_monitor_defaults_are_the_health_check_thresholds(monitor, argument, key):
    # A monitor and `diagnose` must judge a layer alike: their defaults are one set.
    default = inspect.signature(monitor.__init__).parameters[argument].default
    assert default == DEFAULT_THRESHOLDS[key]


# When the probes compile ---------------------------------------------------------------


@pytest.mark.parametrize(
    "update_freq, epochs, steps", [(1, 1, 4), ("epoch", 1, 4), ("epoch", 8, 4), (2, 1, 2)]
)
def test_probes_compile_at_train_begin_when_the_fit_makes_more_updates_than_a_trace_costs(
    update_freq, epochs, steps
):
    from keras_initkit.probe import backend

    model = _mixed_model()
    model.compile("sgd", "mse")
    x, y = _normal(64, 8), _normal(64, 1, seed=1)
    forward = TrainingMonitor((x[:16], y[:16]), update_freq=update_freq, verbose=0)
    # With gradients, one fused pass measures both (the gradient step).
    both = TrainingMonitor((x[:16], y[:16]), update_freq=update_freq, gradients=True, verbose=0)
    states = []

    class Spy(keras.callbacks.Callback):  # runs after the monitors' on_train_begin
        def on_train_begin(self, logs=None):
            states.append(
                (
                    forward._measurement.probe._vector.compiled,
                    both._measurement.gradient_probe._step.compiled,
                )
            )

    callbacks = [forward, both, Spy()]
    model.fit(x, y, batch_size=64 // steps, epochs=epochs, callbacks=callbacks, verbose=0)
    updates = (epochs + 1) if update_freq == "epoch" else epochs * steps // update_freq + epochs + 1
    module = backend.current()  # a limit of None: no compiler (torch)
    compiled = [
        limit is not None and updates > limit
        for limit in (module.EAGER_CALLS, module.GRADIENT_EAGER_CALLS)
    ]
    assert [[a is not None, b is not None] for a, b in states] == [compiled]
    assert forward.latest and both.latest  # measured either way
    assert both.latest["relu"]["dead_fraction"] == forward.latest["relu"]["dead_fraction"]


def test_planned_updates_follow_fit_params():
    every = TrainingMonitor((_normal(8, 8), _normal(8, 1)), update_freq=10, verbose=0)
    every.set_params({"epochs": 2, "steps": 50, "verbose": 0})
    assert every._planned_updates() == 2 * 50 // 10 + 2 + 1
    every.set_params({"epochs": 2, "steps": None, "verbose": 0})  # a dataset of unknown length
    assert every._planned_updates() >= 2**31
    per_epoch = TrainingMonitor((_normal(8, 8), _normal(8, 1)), verbose=0)
    per_epoch.set_params({"epochs": 3, "steps": None, "verbose": 0})
    assert per_epoch._planned_updates() == 4
    per_epoch.params = None  # used outside fit: nothing announced beyond the call itself
    assert per_epoch._planned_updates() == 2


def test_a_run_without_findings_records_that_it_has_none(tmp_path):
    from keras_initkit.dashboard import events

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(16, 8), _normal(16, 1)
    monitor = TrainingMonitor(x, log_dir=tmp_path, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert monitor.findings == [] and monitor.latest  # measured, and nothing found
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.has_findings and run.findings == []  # recorded, not derived by the dashboard


def test_the_layer_record_lists_gradient_only_layers_in_forward_order(tmp_path):
    """Layers measured for their gradient only (a LayerNormalization) were recorded
    after the head, so the dashboard drew them there and aligned depths wrongly."""
    from keras_initkit.dashboard import events

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu", name="a")(inputs)
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = keras.layers.Dense(16, activation="relu", name="b")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(16, 8), _normal(16, 1)
    monitor = TrainingMonitor((x, y), gradients=True, log_dir=tmp_path, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert "norm" in monitor.latest and "gradient_norm" in monitor.latest["norm"]
    run = events.read_run(str(tmp_path / "initkit"))
    assert [n.split("/")[-1] for n in run.layers] == ["a", "norm", "b", "head"]


# Keras' epoch logs ---------------------------------------------------------------------


def _run_series(log_dir, run):
    acc = event_accumulator.EventAccumulator(
        os.path.join(str(log_dir), run), size_guidance={"tensors": 0}
    )
    acc.Reload()

    def value(event):  # Keras' own scalars hold tensor_content, not float_val
        return float(tensor_util.make_ndarray(event.tensor_proto))

    tags = [tag for tag in acc.Tags()["tensors"] if tag.startswith("epoch_")]
    return {tag: [(e.step, value(e)) for e in acc.Tensors(tag)] for tag in tags}


def test_tensorboard_logs_writes_keras_epoch_logs_in_keras_layout_on_every_backend(tmp_path):
    """`keras.callbacks.TensorBoard` needs TensorFlow (the README's fit and the demo
    failed on JAX and torch without it). `TensorBoardLogs` writes the epoch logs as it
    does: `train` and `validation` runs, `epoch_<key>` at step = epoch, the learning
    rate; the monitors' `<metric>/<layer>` keys stay in their own run."""
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    model = keras.Sequential([keras.Input((8,)), *layers])
    model.compile(
        keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    x, y = _normal(48, 8), np.arange(48) % 3
    monitor = DeadUnitMonitor(x[:16], add_to_logs=True, verbose=0)
    history = model.fit(
        x,
        y,
        validation_split=0.25,
        epochs=3,
        verbose=0,
        callbacks=[monitor, TensorBoardLogs(tmp_path)],
    )
    train, validation = _run_series(tmp_path, "train"), _run_series(tmp_path, "validation")
    assert set(train) == {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}
    assert set(validation) == {"epoch_loss", "epoch_accuracy"}
    for key, run, tag in [
        ("loss", train, "epoch_loss"),
        ("accuracy", train, "epoch_accuracy"),
        ("val_loss", validation, "epoch_loss"),
        ("val_accuracy", validation, "epoch_accuracy"),
    ]:
        assert [step for step, _ in run[tag]] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in run[tag]], history.history[key], rtol=1e-6)
    assert [v for _, v in train["epoch_learning_rate"]] == pytest.approx([0.05] * 3)
    assert any("/" in key for key in history.history)  # the monitor's keys were there
    if keras.backend.backend() == "tensorflow":  # the same tags as Keras' own callback
        model.fit(
            x,
            y,
            validation_split=0.25,
            epochs=1,
            verbose=0,
            callbacks=[keras.callbacks.TensorBoard(tmp_path / "keras")],
        )
        for run, ours in (("train", train), ("validation", validation)):
            assert set(_run_series(tmp_path / "keras", run)) == set(ours)


def test_tensorboard_logs_rejects_a_bad_log_dir(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"must be a directory path\. Received: log_dir=None"):
        TensorBoardLogs(None)
    with pytest.raises(ValueError, match=r"is a file, not a directory"):
        TensorBoardLogs(tmp_path / "file" / "logs")
    with pytest.raises(ValueError, match=r"Received: log_dir=3"):
        TensorBoardLogs(3)


def test_a_monitor_reused_across_fine_tuning_stages_follows_the_trainable_layers():
    """Frozen base, fit, then unfrozen and fit again with the same monitor: it kept the
    first stage's probes, so the unfrozen layers' gradients were never watched."""
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu", name="b")])
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(base(inputs)))
    x, y = _normal(32, 8), _normal(32, 1)
    monitor = GradientMonitor((x, y), verbose=0)
    base.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    assert set(monitor.latest) == {"head"}
    base.trainable = True
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    assert set(monitor.latest) == {"b", "head"}

"""tf.distribute: MirroredStrategy on two logical CPUs, MultiWorkerMirroredStrategy on two
processes, and the chief-only rule for TensorBoard writing; keras.distribution:
DataParallel on JAX with two host devices.

Semantics under test (docs/scaling.md): the probe feeds the whole probe batch to ONE
non-replicated call of the model, so every statistic describes the global probe batch
by construction: the numbers equal those of the same model without a strategy (or
distribution). In a multi-worker job only the chief writes event files; every worker
measures.

Strategies run in subprocesses: logical devices must be configured before TensorFlow
initializes (and XLA's host device count before JAX does), and this process's
configuration stays untouched.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_initkit import summary
from keras_initkit.callbacks import TrainingMonitor

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute needs TensorFlow"
)
JAX_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution.DataParallel on JAX host devices (tox -e jax)",
)

# ------------------------------------------------------------------ the chief rule


def _config(task_type, index, chief=False, workers=2):
    cluster = {"worker": [f"127.0.0.1:{9000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:8999"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "tf_config, chief",
    [
        ("", True),  # no TF_CONFIG: a single process
        (json.dumps({"cluster": {"worker": ["a:1"]}}), True),  # no task
        (_config("worker", 0), True),  # no chief: worker 0
        (_config("worker", 1), False),
        (_config("chief", 0, chief=True), True),
        (_config("worker", 0, chief=True), False),  # a chief exists: worker 0 is not it
        (_config("worker", 1, chief=True), False),
        (_config("ps", 0), False),
        (_config("evaluator", 0), False),
    ],
)
def test_is_chief_rule(tf_config, chief, monkeypatch):
    assert summary.is_chief(tf_config) is chief
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert summary.is_chief() is chief


@pytest.mark.backend_agnostic
@pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")
def test_non_chief_monitor_measures_but_writes_nothing(tmp_path, monkeypatch):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="relu")]
    )
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 8), "float32")
    monkeypatch.setenv("TF_CONFIG", _config("worker", 1))
    monitor = TrainingMonitor(x, log_dir=tmp_path / "logs", update_freq=1, verbose=0)
    history = model.fit(x, y, batch_size=4, epochs=2, callbacks=[monitor], verbose=0)
    assert len(history.history["dead_fraction/relu"]) == 2
    assert not (tmp_path / "logs").exists()
    monkeypatch.setenv("TF_CONFIG", _config("worker", 0))
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[monitor], verbose=0)
    assert len(os.listdir(tmp_path / "logs" / "initkit")) == 1


# ------------------------------------------------------------------ MirroredStrategy

MIRRORED = """
import json, os, sys, tempfile
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import keras_initkit as ik
from keras_initkit.probe import (
    ActivationMoments, BatchNormStatistics, DeadUnits, Probe, Saturation
)
from tensorboard.backend.event_processing import event_accumulator

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x = (rng.normal(size=(64, 8)) * 2 + 0.5).astype("float32")
y = rng.normal(size=(64, 1)).astype("float32")


def build():
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="tanh",
                           kernel_initializer=ik.initializers.LSUV(seed=1)),
        keras.layers.Dense(16, activation="relu", name="relu",
                           kernel_initializer=ik.initializers.LSUV(seed=2)),
        keras.layers.BatchNormalization(momentum=0.5, name="bn"),
        keras.layers.Dropout(0.2, seed=3),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def scalars(metrics):
    return {s: {k: float(v) for k, v in m.items() if np.ndim(v) == 0}
            for s, m in metrics.items()}


def measure(model):
    out = {}
    report = ik.lsuv_init(model, x, verbose=0)
    out["lsuv"] = [[r.name, r.scale, r.variance_after] for r in report.layers]
    reducers = [ActivationMoments(), Saturation(), DeadUnits(), BatchNormStatistics()]
    out["probe"] = scalars(Probe(model, reducers, batch_size=24).run(x).metrics)
    health = ik.diagnose(model, x, y)
    out["diagnose"] = {s: {k: v for k, v in m.items() if isinstance(v, float)}
                       for s, m in health.metrics.items()}
    out["findings"] = [[f.layer, f.kind] for f in health.findings]
    ik.recalibrate_batchnorm(model, x, batch_size=16, verbose=0)
    bn = model.get_layer("bn")
    out["bn"] = [keras.ops.convert_to_numpy(bn.moving_mean).tolist(),
                 keras.ops.convert_to_numpy(bn.moving_variance).tolist()]
    return out


def fit(model, callbacks):
    keras.utils.set_random_seed(5)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False,
                        callbacks=callbacks, verbose=0)
    return [keras.ops.convert_to_numpy(v) for v in model.variables], history.history


with strategy.scope():
    keras.utils.set_random_seed(4)
    mirrored = build()
    twin = build()
plain = build()
plain.set_weights(mirrored.get_weights())
twin.set_weights(mirrored.get_weights())
result = {
    "replicas": strategy.num_replicas_in_sync,
    "mirrored_variable": type(mirrored.weights[0].value).__name__,
    "mirrored": measure(mirrored),
    "plain": measure(plain),
}
twin.set_weights(mirrored.get_weights())
log_dir = tempfile.mkdtemp()
monitors = [
    ik.callbacks.TrainingMonitor((x, y), log_dir=log_dir, update_freq=1, histograms=True,
                                 gradients=True, verbose=0),
    ik.callbacks.LSUVCallback(x, verbose=0),
]
watched, watched_history = fit(mirrored, monitors)
unwatched, unwatched_history = fit(twin, [ik.callbacks.LSUVCallback(x, verbose=0)])
result["bit_identical"] = all(np.array_equal(a, b) for a, b in zip(watched, unwatched))
result["same_history"] = watched_history["loss"] == unwatched_history["loss"]
acc = event_accumulator.EventAccumulator(os.path.join(log_dir, "initkit"),
                                         size_guidance={"tensors": 0})
acc.Reload()
result["steps"] = [e.step for e in acc.Tensors("gradient_norm/tanh")]
result["latest"] = monitors[0].latest["relu"]["dead_fraction"]
print("RESULT" + json.dumps(result))
"""


def _run(code, env):
    """Start `code` in a fresh TensorFlow interpreter with `env` (no inherited TF_CONFIG)."""
    paths = [os.path.abspath(p) for p in sys.path if p]
    env = {
        **{k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
        "PYTHONPATH": os.pathsep.join(paths),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"Subprocess timed out.\nstderr:\n{err[-4000:]}")
    if proc.returncode != 0 or "RESULT" not in out:
        pytest.fail(f"Subprocess exited with {proc.returncode}.\nstderr:\n{err[-6000:]}")
    return json.loads(out.split("RESULT", 1)[1])


@TF_ONLY
def test_mirrored_strategy_statistics_are_those_of_the_global_probe_batch():
    result = _result(_run(MIRRORED, {}), 300)
    assert result["replicas"] == 2
    assert result["mirrored_variable"] == "MirroredVariable"
    mirrored, plain = result["mirrored"], result["plain"]
    # lsuv_init, the probe, diagnose and recalibrate_batchnorm: the numbers without a
    # strategy, to float rounding.
    for (name, scale, variance), (name2, scale2, variance2) in zip(mirrored["lsuv"], plain["lsuv"]):
        assert name == name2
        assert scale == pytest.approx(scale2, rel=1e-6)
        assert variance == pytest.approx(variance2, rel=1e-6)
    for key in ("probe", "diagnose"):
        assert mirrored[key].keys() == plain[key].keys()
        for site, values in plain[key].items():
            assert mirrored[key][site] == pytest.approx(values, rel=1e-5, abs=1e-7), (key, site)
    assert mirrored["findings"] == plain["findings"]
    np.testing.assert_allclose(mirrored["bn"], plain["bn"], rtol=1e-5, atol=1e-7)
    # Fit in strategy.scope() with every monitor: measured at every step, written,
    # and training bit-identical to the same fit without them.
    assert result["steps"] == list(range(9))
    assert 0.0 <= result["latest"] <= 1.0
    assert result["bit_identical"]
    assert result["same_history"]


# ------------------------------------------------------------------ MultiWorkerMirroredStrategy

# Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy on its own (it reduces a
# PerReplica batch eagerly in `_maybe_symbolic_build`, then a scalar along axis 0 in
# `reduce_per_replica`; no keras_initkit code involved). So each worker trains with a
# custom `strategy.run` loop and drives the monitor through the callback interface,
# exactly as `fit` would call it.
WORKER = """
import json, os, sys
import tensorflow as tf
import keras
import numpy as np
import keras_initkit as ik

strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8)).astype("float32")
y = rng.normal(size=(64, 1)).astype("float32")
with strategy.scope():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="tanh"),
        keras.layers.Dense(16, activation="relu", name="relu"),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.optimizer.build(model.trainable_variables)
report = ik.lsuv_init(model, x, verbose=0)
monitor = ik.callbacks.TrainingMonitor(
    (x, y), log_dir=sys.argv[1], update_freq=2, histograms=True, gradients=True, verbose=0
)


@tf.function
def train(xb, yb):
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(xb, training=True) - yb) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return strategy.run(step, args=(xb, yb))


data = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
)
monitor.set_model(model)
monitor.on_train_begin()
for epoch in range(2):
    monitor.on_epoch_begin(epoch)
    for batch, (xb, yb) in enumerate(data):
        train(xb, yb)
        monitor.on_train_batch_end(batch)
    logs = {}
    monitor.on_epoch_end(epoch, logs)
monitor.on_train_end()
print("RESULT" + json.dumps({
    "pid": os.getpid(),
    "replicas": strategy.num_replicas_in_sync,
    "lsuv": [r.scale for r in report.layers],
    "latest": monitor.latest,
    "logs": logs,
    "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
}))
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def workers():
    """Start processes; every one still alive at teardown is killed."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@TF_ONLY
def test_multi_worker_two_processes_only_the_chief_writes(tmp_path, workers):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    log_dir = tmp_path / "shared_logs"  # one directory for the job, as on shared storage
    code = WORKER.replace("sys.argv[1]", repr(str(log_dir)))
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        workers.append(_run(code, {"TF_CONFIG": json.dumps(config)}))
    chief, other = (_result(proc, 300) for proc in workers)
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["iterations"] == other["iterations"] == 8  # 4 global batches x 2 epochs
    # Every worker measures the same global probe batch on the same weights...
    assert chief["lsuv"] == other["lsuv"]
    assert chief["latest"] == other["latest"]
    assert chief["logs"] == other["logs"] and "dead_fraction/relu" in chief["logs"]
    # ...and only the chief (worker 0, no "chief" task in the cluster) writes.
    files = os.listdir(log_dir / "initkit")
    assert len(files) == 1
    assert f".{chief['pid']}." in files[0]


# ------------------------------------------------------------------ keras.distribution

# DataParallel on JAX over two host devices: variables replicated on a ("batch",) mesh,
# `fit` sharding each batch. The probe batch is the same numpy data as for a model
# without distribution, or the same data laid out by the distribution (sharded along
# the batch axis): both must give the undistributed numbers.
DATA_PARALLEL = """
import json, os, sys, tempfile
import jax
import keras
import numpy as np
import keras_initkit as ik
from keras_initkit.dashboard import events
from keras_initkit.probe import (
    ActivationMoments, BatchNormStatistics, DeadUnits, Probe, Saturation
)
from keras_initkit.probe.gradients import layer_gradients

assert keras.backend.backend() == "jax"
dp = keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu"))
rng = np.random.default_rng(0)
x = (rng.normal(size=(64, 8)) * 2 + 0.5).astype("float32")
y = rng.normal(size=(64, 1)).astype("float32")


def build():
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="tanh",
                           kernel_initializer=ik.initializers.LSUV(seed=1)),
        keras.layers.Dense(16, activation="relu", name="relu",
                           kernel_initializer=ik.initializers.LSUV(seed=2)),
        keras.layers.BatchNormalization(momentum=0.5, name="bn"),
        keras.layers.Dropout(0.2, seed=3),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def scalars(metrics):
    return {s: {k: float(v) for k, v in m.items() if np.ndim(v) == 0}
            for s, m in metrics.items()}


def numpy(v):
    return keras.ops.convert_to_numpy(v).tolist()


def devices(model):
    return sorted({len(v.value.sharding.device_set) for v in model.variables})


def measure(model, x, y):
    out = {}
    report = ik.lsuv_init(model, x, verbose=0)
    out["lsuv"] = [[r.name, r.scale, r.variance_after] for r in report.layers]
    reducers = [ActivationMoments(), Saturation(), DeadUnits(), BatchNormStatistics()]
    # 25: batches of 25, 25 and 14 samples, none a multiple of the device count needed
    out["probe"] = scalars(Probe(model, reducers, batch_size=25).run(x).metrics)
    out["gradients"] = scalars(layer_gradients(model, (x, y), batch_size=25).metrics)
    health = ik.diagnose(model, x, y)
    out["diagnose"] = {s: {k: v for k, v in m.items() if isinstance(v, float)}
                       for s, m in health.metrics.items()}
    out["findings"] = [[f.layer, f.kind] for f in health.findings]
    bn = model.get_layer("bn")
    for method in ("one_pass", "chain"):
        ik.recalibrate_batchnorm(model, x, batch_size=16, method=method, verbose=0)
        out["bn_" + method] = [numpy(bn.moving_mean), numpy(bn.moving_variance)]
    out["devices"] = devices(model)  # the layout survives every write
    return out


def fit(model, callbacks):
    keras.utils.set_random_seed(5)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False,
                        callbacks=callbacks, verbose=0)
    return [keras.ops.convert_to_numpy(v) for v in model.variables], history.history


keras.utils.set_random_seed(4)
with dp.scope():
    distributed, sharded, twin = build(), build(), build()
plain = build()
for model in (sharded, twin, plain):
    model.set_weights(distributed.get_weights())
result = {"devices": len(jax.devices()), "plain_devices": devices(plain)}
with dp.scope():
    result["distributed"] = measure(distributed, x, y)
    xs = keras.distribution.distribute_tensor(x, dp.get_data_layout(x.shape))
    ys = keras.distribution.distribute_tensor(y, dp.get_data_layout(y.shape))
    result["x_devices"] = len(xs.sharding.device_set)
    result["sharded"] = measure(sharded, xs, ys)
result["plain"] = measure(plain, x, y)

# fit under DataParallel with every monitor, against the same fit without them
twin.set_weights(distributed.get_weights())
log_dir = tempfile.mkdtemp()
monitor = ik.callbacks.TrainingMonitor((x, y), log_dir=log_dir, update_freq=1,
                                       histograms=True, gradients=True, verbose=0)
with dp.scope():
    watched, watched_history = fit(distributed, [monitor, ik.callbacks.LSUVCallback(x, verbose=0)])
    unwatched, unwatched_history = fit(twin, [ik.callbacks.LSUVCallback(x, verbose=0)])
result["bit_identical"] = all(np.array_equal(a, b) for a, b in zip(watched, unwatched))
result["same_history"] = watched_history["loss"] == unwatched_history["loss"]
(run,) = events.read_logdir(log_dir)
result["steps"] = run.series["gradient_norm"]["tanh"][0].tolist()
result["latest"] = {s: {k: float(v) for k, v in m.items() if np.ndim(v) == 0}
                    for s, m in monitor.latest.items()}
# the last update measured the final weights: measure them again without distribution
# (a monitor driven through the callback interface, as `fit` drives it: train begin)
plain.set_weights(distributed.get_weights())
again = ik.callbacks.TrainingMonitor((x, y), gradients=True, verbose=0)
again.set_model(plain)
again.on_train_begin()
again.on_train_end()
result["plain_latest"] = {s: {k: float(v) for k, v in m.items() if np.ndim(v) == 0}
                          for s, m in again.latest.items()}
print("RESULT" + json.dumps(result))
"""


def _approx_tables(got, expected, key):
    assert got.keys() == expected.keys(), key
    for site, values in expected.items():
        assert got[site] == pytest.approx(values, rel=1e-5, abs=1e-7), (key, site)


@pytest.mark.backend_agnostic
@JAX_ONLY
def test_data_parallel_statistics_are_those_of_the_global_probe_batch():
    # XLA reads the host device count when JAX initializes: a fresh interpreter.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    # JAX_PLATFORMS: on a machine with a GPU, JAX's default devices are its GPUs.
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    result = _result(_run(DATA_PARALLEL, env), 400)
    assert result["devices"] == 2
    assert result["plain_devices"] == [1]  # the reference: one device, no distribution
    assert result["x_devices"] == 2  # the sharded probe data really is split
    plain = result["plain"]
    # lsuv_init, the probe, layer gradients, diagnose and recalibrate_batchnorm (both
    # methods), on replicated variables, with numpy or batch-sharded probe data: the
    # numbers without distribution, to float rounding.
    for name in ("distributed", "sharded"):
        got = result[name]
        assert got["devices"] == [2], name  # every variable still on both devices
        assert [r[0] for r in got["lsuv"]] == [r[0] for r in plain["lsuv"]]
        for (_, scale, variance), (_, scale2, variance2) in zip(got["lsuv"], plain["lsuv"]):
            assert scale == pytest.approx(scale2, rel=1e-6), name
            assert variance == pytest.approx(variance2, rel=1e-6), name
        for key in ("probe", "gradients", "diagnose"):
            _approx_tables(got[key], plain[key], f"{name}/{key}")
        assert got["findings"] == plain["findings"], name
        for key in ("bn_one_pass", "bn_chain"):
            np.testing.assert_allclose(got[key], plain[key], rtol=1e-5, atol=1e-7)
    # fit under DataParallel with every monitor: measured at every step, written, the
    # last measurement that of the final weights without distribution, and training
    # bit-identical to the same fit without the monitors.
    assert result["steps"] == list(range(9))
    latest, reference = result["latest"], result["plain_latest"]
    assert latest.keys() == reference.keys()
    for site, values in reference.items():
        # bn_init_weight = momentum^(updates seen): a count of steps, not a statistic
        common = {k: v for k, v in latest[site].items() if k in values and k != "bn_init_weight"}
        assert common and common == pytest.approx(
            {k: values[k] for k in common}, rel=1e-4, abs=1e-6
        ), site
    assert result["bit_identical"]
    assert result["same_history"]

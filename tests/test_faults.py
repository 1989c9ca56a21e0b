"""Faults: a failing log directory, an interrupt at any point, a checkpoint mid-training.

- The TensorBoard log directory removed, replaced by a file, made read-only, or failing
  on write (disk full) while `fit` runs: a warning, and training goes on unchanged.
- A `KeyboardInterrupt` at any variable assignment inside `lsuv_init` or
  `recalibrate_batchnorm` leaves every weight as it was (the base cases, one interrupt
  point each, are in test_lsuv.py and test_batchnorm.py).
- A `.keras` checkpoint written by `keras.callbacks.ModelCheckpoint` mid-training,
  with every initializer and the monitors attached, reloads in a fresh process that
  imports only `keras_initkit`, and training resumes from it.
"""

import errno
import os
import shutil
import stat

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import keras_initkit as ik
from keras_initkit import lsuv, summary
from keras_initkit.callbacks import LSUVCallback, TrainingMonitor

pytestmark = pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _numpy(x):
    return np.array(keras.ops.convert_to_numpy(x))


def _steps(run_dir, tag="dead_fraction/relu"):
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    if tag not in acc.Tags()["tensors"]:
        return []
    return sorted(e.step for e in acc.Tensors(tag))


def _model():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", name="tanh"),
            keras.layers.Dense(8, activation="relu", name="relu"),
            keras.layers.Dense(1, name="head"),
        ]
    )


class AtBatch(keras.callbacks.Callback):
    """Runs `action()` once, at the end of global batch `at` (1-based)."""

    def __init__(self, at, action):
        super().__init__()
        self.at, self.action, self.seen = at, action, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            self.action()


def _fit_with(tmp_path, fault, epochs=3):
    """A monitored fit (8 batches per epoch, update_freq=1) with `fault` at batch 5."""
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(32, 6, seed=1), _normal(32, 1, seed=2)
    log_dir = tmp_path / "logs"
    monitor = TrainingMonitor(x, log_dir=log_dir, update_freq=1, histograms=True, verbose=0)
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=epochs,
        callbacks=[AtBatch(5, lambda: fault(log_dir)), monitor],
        verbose=0,
    )
    return history.history, monitor, log_dir


# ------------------------------------------------------------------ the log directory


def _remove(log_dir):
    """Remove `log_dir` at once, as it looks to the writer.

    Rename it away first, then delete it: without TensorFlow, the `tensorboard` event
    writer's background thread appends to its file by path, and may recreate the file
    between `shutil.rmtree`'s unlink and rmdir ('Directory not empty', a flaky test).
    """
    gone = log_dir.with_name(log_dir.name + ".removed")
    os.rename(log_dir, gone)
    shutil.rmtree(gone)


@pytest.mark.backend_agnostic
def test_log_dir_removed_mid_training_warns_and_writes_a_new_file(tmp_path):
    with pytest.warns(UserWarning, match="was removed during training"):
        history, monitor, log_dir = _fit_with(tmp_path, _remove)
    assert len(history["loss"]) == 3
    assert len(history["dead_fraction/relu"]) == 3
    assert monitor.latest["relu"]["dead_fraction"] == history["dead_fraction/relu"][-1]
    # The recreated run holds every later update (the one at batch 5 went to the
    # removed file), and the Custom Scalars layout again.
    steps = _steps(log_dir / "initkit")
    assert steps == list(range(6, 25))
    acc = event_accumulator.EventAccumulator(str(log_dir / "initkit"))
    acc.Reload()
    assert "custom_scalars__config__" in acc.Tags()["tensors"]


@pytest.mark.backend_agnostic
def test_log_dir_replaced_by_a_file_warns_and_stops_writing(tmp_path):
    def replace(log_dir):
        _remove(log_dir)
        log_dir.write_text("not a directory")

    with pytest.warns(UserWarning, match="stopped writing TensorBoard summaries"):
        history, monitor, log_dir = _fit_with(tmp_path, replace)
    assert len(history["loss"]) == 3
    assert len(history["saturated_fraction/tanh"]) == 3  # logs and findings go on
    assert log_dir.read_text() == "not a directory"


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("method", ["write", "flush"])
def test_write_failure_mid_training_warns_once_and_training_goes_on(tmp_path, monkeypatch, method):
    """Disk full (or any write error) from the writer: one warning, same training."""
    expected, _, _ = _fit_with(tmp_path / "clean", lambda log_dir: None)
    original = getattr(summary.SummaryWriter, method)

    def fault(log_dir):
        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(summary.SummaryWriter, method, full)

    with pytest.warns(UserWarning, match="No space left on device") as record:
        history, _, log_dir = _fit_with(tmp_path / "full", fault)
    monkeypatch.setattr(summary.SummaryWriter, method, original)
    assert sum("stopped writing" in str(w.message) for w in record) == 1
    assert history == expected
    # What was written before the fault is still there and readable.
    assert _steps(log_dir / "initkit")[:5] == [0, 1, 2, 3, 4]


@pytest.mark.backend_agnostic
def test_log_dir_made_read_only_mid_training_keeps_writing_the_open_file(tmp_path):
    """The event file is open already: permissions on the directory do not matter."""

    def read_only(log_dir):
        for path in (log_dir, log_dir / "initkit"):
            os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)

    try:
        history, _, log_dir = _fit_with(tmp_path, read_only)
    finally:
        for path in (tmp_path / "logs", tmp_path / "logs" / "initkit"):
            os.chmod(path, stat.S_IRWXU)
    assert len(history["loss"]) == 3
    assert _steps(log_dir / "initkit") == list(range(25))


# ------------------------------------------------------------------ interrupts


def _interrupt_at(monkeypatch, n):
    """Raise KeyboardInterrupt at the n-th `Variable.assign` (1-based), then pass through."""
    assign = keras.Variable.assign
    calls = {"n": 0}

    def counting(self, value):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt(f"at assign {n}")
        return assign(self, value)

    monkeypatch.setattr(keras.Variable, "assign", counting)
    return calls


class Scaled(keras.layers.Layer):
    """A custom kernel layer: lsuv_init re-runs it after each rescale."""

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], 6), initializer=keras.initializers.RandomNormal(stddev=3.0)
        )

    def call(self, x):
        return keras.ops.tanh(keras.ops.matmul(x, self.kernel))


def _lsuv_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(4, 3, activation="relu", bias_initializer="ones"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh", bias_initializer="ones"),
            Scaled(),
            keras.layers.Dense(1),
        ]
    )


def _count_assigns(monkeypatch, run):
    calls = _interrupt_at(monkeypatch, 0)  # never interrupts: counts
    run()
    monkeypatch.undo()
    return calls["n"]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("center", [False, True])
def test_keyboard_interrupt_at_any_assignment_of_lsuv_init_restores_every_weight(
    monkeypatch, center
):
    x = _normal(32, 5, 5, 2, seed=4) * 2.0
    model = _lsuv_model()
    total = _count_assigns(monkeypatch, lambda: ik.lsuv_init(model, x, center=center, verbose=0))
    assert total >= 2  # kernels changed (and biases when centering)
    for n in range(1, total + 1):
        model = _lsuv_model()
        before = [_numpy(v) for v in model.variables]
        _interrupt_at(monkeypatch, n)
        with pytest.raises(KeyboardInterrupt):
            ik.lsuv_init(model, x, center=center, verbose=0)
        monkeypatch.undo()
        for old, v in zip(before, model.variables):
            np.testing.assert_array_equal(_numpy(v), old, err_msg=f"interrupt at {n}")


def _stale_bn_model():
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )
    for i, layer in enumerate(model.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(8, 0.5 * (i + 1), "float32"))
            layer.moving_variance.assign(np.full(8, 3.0, "float32"))
    return model


@pytest.mark.backend_agnostic
def test_keyboard_interrupt_at_any_assignment_of_recalibrate_batchnorm_restores_state(
    monkeypatch,
):
    x = _normal(40, 6, seed=6) * 2.0 + 1.0
    model = _stale_bn_model()
    total = _count_assigns(
        monkeypatch, lambda: ik.recalibrate_batchnorm(model, x, batch_size=16, verbose=0)
    )
    assert total >= 4  # two layers x (mean, variance), over several passes
    for n in range(1, total + 1):
        model = _stale_bn_model()
        before = [_numpy(v) for v in model.variables]
        _interrupt_at(monkeypatch, n)
        with pytest.raises(KeyboardInterrupt):
            ik.recalibrate_batchnorm(model, x, batch_size=16, verbose=0)
        monkeypatch.undo()
        for old, v in zip(before, model.variables):
            np.testing.assert_array_equal(_numpy(v), old, err_msg=f"interrupt at {n}")


@pytest.mark.backend_agnostic
def test_interrupted_lsuv_callback_leaves_the_model_untouched_and_fit_can_start_again(
    monkeypatch, tmp_path
):
    model = _lsuv_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = _normal(16, 5, 5, 2, seed=7), _normal(16, 1, seed=8)
    before = [_numpy(v) for v in model.variables]
    callbacks = [LSUVCallback(x, verbose=0), TrainingMonitor(x, log_dir=tmp_path, verbose=0)]
    assign = lsuv._Calibration.assign
    calls = []

    def interrupted(self, layer, variable, value):  # the second kernel change inside lsuv_init
        calls.append(variable)
        if len(calls) == 2:
            raise KeyboardInterrupt("Ctrl-C")
        return assign(self, layer, variable, value)

    monkeypatch.setattr(lsuv._Calibration, "assign", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, callbacks=callbacks, verbose=0)
    monkeypatch.undo()
    assert len(calls) == 2
    for old, v in zip(before, model.variables):
        np.testing.assert_array_equal(_numpy(v), old)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=callbacks, verbose=0)
    assert callbacks[0].report is not None
    assert len(history.history["loss"]) == 2
    head = model.layers[-1].name
    assert _steps(tmp_path / "initkit", f"activation_std/{head}") == [0, 2, 4]


# ------------------------------------------------------------------ checkpoints


@pytest.mark.backend_agnostic
def test_checkpoint_mid_training_reloads_in_a_fresh_process(tmp_path, run_python):
    init = ik.initializers
    keras.utils.set_random_seed(9)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init.Identity()),
            keras.layers.Conv2D(
                8, 3, padding="same", activation="tanh", kernel_initializer=init.DeltaOrthogonal()
            ),
            keras.layers.Conv2D(8, 1, kernel_initializer=init.ZerO()),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", kernel_initializer=init.Sparse(nonzero=20)),
            keras.layers.Dense(8, activation="tanh", kernel_initializer=init.LSUV(seed=1)),
            keras.layers.Dense(1, kernel_initializer=init.Normalized(gain=0.5, seed=2)),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x, y = _normal(32, 6, 6, 4, seed=10), _normal(32, 1, seed=11)
    pattern = tmp_path / "checkpoints" / "epoch{epoch}-batch{batch}.keras"
    saved = {}

    class Capture(keras.callbacks.Callback):  # after ModelCheckpoint: the saved state
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2 and not saved:
                saved["weights"] = [_numpy(v) for v in self.model.weights]
                saved["output"] = _numpy(self.model(x, training=False))

    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        callbacks=[
            LSUVCallback(x, verbose=0),
            TrainingMonitor(x, log_dir=tmp_path / "logs", update_freq=1, verbose=0),
            keras.callbacks.ModelCheckpoint(str(pattern), save_freq=3),  # every 3 batches
            Capture(),
        ],
        verbose=0,
    )
    path = sorted((tmp_path / "checkpoints").iterdir())[0]  # the first one, after batch 3
    weights = {f"w{i}": w for i, w in enumerate(saved["weights"])}
    np.savez(tmp_path / "saved.npz", x=x, y=y, output=saved["output"], **weights)
    out = run_python(
        f"""
        import numpy as np
        import keras
        import keras_initkit

        model = keras.saving.load_model({str(path)!r})
        saved = np.load({str(tmp_path / "saved.npz")!r})
        names = [type(getattr(layer, "kernel_initializer", None)).__name__
                 for layer in model.layers]
        print("initializers", ",".join(n for n in names if n != "NoneType"))
        for i, w in enumerate(model.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), saved[f"w{{i}}"])
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model(saved["x"], training=False)),
            saved["output"], rtol=1e-5, atol=1e-6,
        )
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3
        monitor = keras_initkit.callbacks.TrainingMonitor(saved["x"], verbose=0)
        history = model.fit(saved["x"], saved["y"], batch_size=8, epochs=1,
                            callbacks=[monitor], verbose=0)
        print("resumed", len(history.history["loss"]), sorted(monitor.latest)[0])
        """
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert lines["initializers"] == ("Identity,DeltaOrthogonal,ZerO,Sparse,LSUV,Normalized")
    assert lines["resumed"].startswith("1 ")

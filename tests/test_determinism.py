"""Determinism: seeds give the same weights in every process; watching never changes training.

- An int seed gives bit-identical kernels in separate processes (and with different
  `PYTHONHASHSEED`s), for every initializer; so do `keras.utils.set_random_seed` with
  `seed=None` initializers, a `SeedGenerator`'s sequence, and `lsuv_init`.
- A seeded `fit` with every monitor (update_freq=1, histograms, gradients, log_dir),
  `LSUVCallback` and a `diagnose` call beforehand ends bit-identical, weights and
  optimizer state and history, to the same fit with `LSUVCallback` alone (the base
  case, one monitor at update_freq=1 on TensorFlow, is in test_monitors.py).
- A gradient pass before the first `fit` leaves the compiled loss unbuilt: `fit`
  builds it in a symbolic build that it skips when nothing is left to build, and that
  build consumes random state (on JAX a shuffle from NumPy's global RNG), so a
  compiled loss built beforehand changes the random draws of the whole fit (on JAX,
  every epoch's batch order). Keras' own `evaluate` before `fit` does that.

Across backends kernels differ: each backend has its own random number generator.
"""

import json

import keras
import numpy as np
import pytest

import keras_initkit as ik
from keras_initkit.callbacks import (
    BatchNormMonitor,
    DeadUnitMonitor,
    GradientMonitor,
    LSUVCallback,
    SaturationMonitor,
    TrainingMonitor,
)
from keras_initkit.probe.gradients import GradientProbe

# Runs in this process and in two fresh ones; prints sha256 digests as JSON.
DIGESTS = """
import hashlib, json
import keras
import numpy as np
import keras_initkit as ik


def digest(x):
    array = np.ascontiguousarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))
    return hashlib.sha256(array.tobytes()).hexdigest()


def digests():
    init = ik.initializers
    out = {}
    seeded = {
        "DeltaOrthogonal": lambda s: init.DeltaOrthogonal(seed=s),
        "Sparse": lambda s: init.Sparse(nonzero=3, seed=s),
        "Normalized": lambda s: init.Normalized(seed=s),
        "LSUV": lambda s: init.LSUV(seed=s),
        "LSUV(Sparse)": lambda s: init.LSUV(base="keras_initkit>Sparse", seed=s),
    }
    for name, make in seeded.items():
        for seed in (0, 1234, 2**32 - 1):
            for dtype in ("float32", "bfloat16"):
                out[f"{name} seed={seed} {dtype}"] = digest(make(seed)((3, 3, 4, 6), dtype))
    out["Identity"] = digest(init.Identity(gain=0.5)((3, 3, 4, 6)))
    out["ZerO"] = digest(init.ZerO()((3, 3, 4, 6)))
    generator = init.Normalized(seed=keras.random.SeedGenerator(5))
    out["SeedGenerator"] = [digest(generator((4, 6))) for _ in range(3)]
    # Global seeding: seed=None initializers in layers after set_random_seed.
    keras.utils.set_random_seed(42)
    model = keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(4, 3, kernel_initializer=init.DeltaOrthogonal(), name="c"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="tanh", kernel_initializer=init.LSUV(), name="d"),
        keras.layers.Dense(8, kernel_initializer=init.Sparse(nonzero=4), name="s"),
        keras.layers.Dense(1, kernel_initializer=init.Normalized(), name="n"),
    ])
    out["set_random_seed"] = [digest(w) for w in model.weights]
    x = np.random.default_rng(3).normal(size=(32, 6, 6, 3)).astype("float32")
    ik.lsuv_init(model, x, verbose=0)
    out["lsuv_init"] = [digest(w) for w in model.weights]
    return out
"""


@pytest.mark.backend_agnostic
@pytest.mark.filterwarnings("ignore::keras_initkit.lsuv.LSUVWarning")
def test_seeded_kernels_identical_across_processes(run_python, monkeypatch):
    script = DIGESTS + "\nprint('RESULT' + json.dumps(digests()))\n"
    children = []
    for hash_seed in ("0", "12345"):
        monkeypatch.setenv("PYTHONHASHSEED", hash_seed)
        children.append(json.loads(run_python(script).split("RESULT", 1)[1]))
    namespace = {}
    exec(DIGESTS, namespace)
    here = json.loads(json.dumps(namespace["digests"]()))
    assert children[0] == children[1]
    assert here == children[0]
    # ...and the seeds matter: different seeds, different kernels.
    assert here["Sparse seed=0 float32"] != here["Sparse seed=1234 float32"]
    assert len(set(here["SeedGenerator"])) == 3
    assert here["set_random_seed"] != here["lsuv_init"]


# ------------------------------------------------------------------ never change training


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _model():
    """LSUV-marked layers, tanh, ReLU, batch norm and an unseeded Dropout (global RNG)."""
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                16, activation="tanh", kernel_initializer=ik.initializers.LSUV(), name="tanh"
            ),
            keras.layers.Dense(
                16, activation="relu", kernel_initializer=ik.initializers.LSUV(), name="relu"
            ),
            keras.layers.BatchNormalization(momentum=0.9, name="bn"),
            keras.layers.Dropout(0.25, name="dropout"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def _fit(callbacks, before_fit=None):
    keras.utils.set_random_seed(7)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x, y = _normal(40, 8, seed=1), _normal(40, 1, seed=2)
    if before_fit is not None:
        before_fit(model, x, y)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=True,
        validation_data=(x[:16], y[:16]),
        callbacks=callbacks,
        verbose=0,
    )
    state = [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]
    state += [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    return state, history.history


@pytest.mark.backend_agnostic
@pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")
@pytest.mark.filterwarnings("ignore::keras_initkit.lsuv.LSUVWarning")
def test_fit_with_every_monitor_lsuv_callback_and_diagnose_is_bit_identical(tmp_path):
    x, y = _normal(24, 8, seed=3), _normal(24, 1, seed=4)
    monitors = [
        TrainingMonitor(
            (x, y),
            log_dir=tmp_path / "all",
            update_freq=1,
            histograms=True,
            gradients=True,
            batch_size=10,
        ),
        SaturationMonitor(x, log_dir=tmp_path / "sat", update_freq=1, histograms=True),
        DeadUnitMonitor(x, update_freq=1),
        BatchNormMonitor(x, log_dir=tmp_path / "bn", update_freq=2),
        GradientMonitor((x, y), update_freq=1),
    ]
    for monitor in monitors:
        monitor.verbose = 0

    def diagnose(model, x, y):
        ik.diagnose(model, x, y)  # with targets: its gradient pass runs too

    watched, watched_history = _fit([LSUVCallback(x, verbose=0), *monitors], diagnose)
    plain, plain_history = _fit([LSUVCallback(x, verbose=0)])
    assert len(watched) == len(plain)
    for a, b in zip(watched, plain):
        np.testing.assert_array_equal(a, b)
    assert watched_history["loss"] == plain_history["loss"]
    assert watched_history["val_loss"] == plain_history["val_loss"]
    # The monitors did measure, at every step.
    assert monitors[0]._last_update == 15  # 5 batches x 3 epochs
    assert (tmp_path / "all" / "initkit").is_dir()


@pytest.mark.backend_agnostic
def test_gradients_before_fit_leave_the_compiled_loss_unbuilt_and_fit_unchanged():
    # Keras' own `model.evaluate` before `fit` changes this fit on JAX and torch (it
    # builds the compiled loss); a gradient probe must not.
    x, y = _normal(24, 8, seed=3), _normal(24, 1, seed=4)
    probes = []

    def gradients(model, _x, _y):
        probes.append(GradientProbe(model))
        probes[0].run((x, y))
        assert not model._compile_loss.built

    probed, probed_history = _fit([], gradients)
    plain, plain_history = _fit([])
    for a, b in zip(probed, plain):
        np.testing.assert_array_equal(a, b)
    assert probed_history["loss"] == plain_history["loss"]
    # After fit (compiled loss built) the same probe measures what a new one does.
    model = probes[0].model
    again = probes[0].run((x, y))
    fresh = GradientProbe(model).run((x, y))
    assert again.metrics == fresh.metrics
    assert again.loss == fresh.loss

"""Cheap checks that the README, CI, metadata and public face agree."""

import ast
import configparser
import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest

import keras_initkit

ROOT = Path(__file__).resolve().parents[1]


def _section(markdown, title):
    """The text of the `## title` section, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _fenced_commands(markdown):
    """Non-empty, non-comment lines of the fenced code blocks in `markdown`."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one():
    quick_start = _section((ROOT / "README.md").read_text(), "Quick start")
    commands = _fenced_commands(quick_start)
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("tox -e demo"), demo
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines, f"{tests!r} is not a line of .ci/run"


def test_version_and_public_names():
    tree = ast.parse((ROOT / "keras_initkit" / "version.py").read_text())
    literal = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "__version__"
    )
    assert keras_initkit.__version__ == literal
    assert keras_initkit.__all__, "keras_initkit.__all__ is empty"
    missing = [name for name in keras_initkit.__all__ if not hasattr(keras_initkit, name)]
    assert not missing, f"keras_initkit.__all__ names missing attributes: {missing}"


def test_setup_cfg_is_the_metadata_source():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "project" not in pyproject, "pyproject.toml must not have a [project] table"
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(ROOT / "setup.cfg")
    assert setup_cfg["metadata"]["version"] == "attr: keras_initkit.version.__version__"


# ------------------------------------------------------------------ TensorFlow optional


def _setup_cfg():
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(ROOT / "setup.cfg")
    return setup_cfg


def _lines(value):
    return [line.strip() for line in value.strip().splitlines() if line.strip()]


def test_tensorflow_is_an_extra_not_a_requirement():
    setup_cfg = _setup_cfg()
    requires = _lines(setup_cfg["options"]["install_requires"])
    assert not [r for r in requires if r.lower().startswith("tensorflow")], requires
    assert _lines(setup_cfg["options.extras_require"]["tensorflow"]) == ["tensorflow>=2.16"]


def test_tox_jax_and_torch_envs_run_without_tensorflow():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert "tensorflow" in _lines(tox["testenv"]["extras"])  # py311, browser: TF backend
    for env in ("paper", "docs", "demo"):
        assert "tensorflow" in _lines(tox[f"testenv:{env}"]["extras"]), env
    for env in ("jax", "torch"):
        section = tox[f"testenv:{env}"]
        assert "tensorflow" not in _lines(section["extras"]), env
        assert "tensorflow" not in section.get("deps", ""), env
        set_env = section["set_env"]
        assert f"KERAS_BACKEND = {env}" in set_env, env
        assert "KERAS_INITKIT_EXPECT_NO_TF = 1" in set_env, env


# Every feature, in a fresh interpreter of an environment without TensorFlow: the
# initializers, a probe, diagnose, lsuv_init, recalibrate_batchnorm, suggest_initializer,
# a TrainingMonitor fit writing event files (the `tensorboard` package's writer), the
# `keras-initkit report` CLI with its HTML dashboard, and a .keras round trip.
WITHOUT_TENSORFLOW = """
import importlib.util, os, sys, tempfile
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed"
import keras
import numpy as np
import keras_initkit as ik
from keras_initkit import cli, summary
from keras_initkit.dashboard import events
from keras_initkit.probe import ActivationMoments, BatchNormStatistics, DeadUnits, Probe, Saturation

assert keras.backend.backend() != "tensorflow"
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8)).astype("float32")
y = rng.normal(size=(64, 1)).astype("float32")


def build():
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="tanh",
                           kernel_initializer=ik.initializers.LSUV(seed=1)),
        keras.layers.Dense(16, activation="relu", name="relu",
                           kernel_initializer=ik.initializers.Sparse(nonzero=4, seed=2)),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(1, name="head", kernel_initializer=ik.initializers.Normalized()),
    ])


model = build()
model.compile(optimizer="sgd", loss="mse")
reducers = [ActivationMoments(), Saturation(), DeadUnits(), BatchNormStatistics()]
result = Probe(model, reducers).run(x)
assert {"tanh", "relu", "bn"} <= set(result.metrics), result.metrics
report = ik.lsuv_init(model, x, verbose=0)
assert report.converged, report
health = ik.diagnose(model, x, y)
assert "relu" in health.metrics
ik.recalibrate_batchnorm(model, x, batch_size=16, verbose=0)
mean = keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean)
assert np.abs(mean).max() > 0, "recalibrate_batchnorm changed nothing"
suggestion = ik.suggest_initializer(
    build(), x, y, candidates=["glorot_uniform", "he_normal"], loss="mse", verbose=0
)
assert len(suggestion.candidates) == 2, suggestion
log_dir = tempfile.mkdtemp()
monitor = ik.callbacks.TrainingMonitor(
    (x, y), log_dir=log_dir, update_freq=2, histograms=True, gradients=True, verbose=0
)
assert isinstance(summary.create_writer(log_dir), summary.EventFileSummaryWriter)
model.fit(x, y, batch_size=16, epochs=2, callbacks=[monitor], verbose=0)
(run,) = events.read_logdir(log_dir)
for metric in ("activation_std", "dead_fraction", "saturated_fraction", "gradient_norm"):
    assert metric in run.series, (metric, run.metrics)
assert run.has_meta
html = os.path.join(log_dir, "report.html")
assert cli.main(["report", log_dir, "--html", html]) == 0 and os.path.getsize(html) > 0
path = os.path.join(log_dir, "model.keras")
model.save(path)
keras.saving.load_model(path)
assert "tensorflow" not in sys.modules, "TensorFlow imported"
print("NO_TF_OK", keras.backend.backend(), sorted(run.series))
"""


@pytest.mark.backend_agnostic
@pytest.mark.skipif(
    os.environ.get("KERAS_INITKIT_EXPECT_NO_TF") != "1",
    reason="only in the envs without TensorFlow (tox -e jax, tox -e torch set KERAS_INITKIT_EXPECT_NO_TF=1)",
)
@pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning")
def test_no_tensorflow_in_this_env(run_python):
    assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed in this env"
    stdout = run_python(WITHOUT_TENSORFLOW, timeout=400)
    assert "NO_TF_OK" in stdout, stdout

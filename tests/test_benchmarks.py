"""The benchmark scripts run and reject bad arguments (no timings are asserted here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each starts a process that imports TensorFlow: the paper env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize(
    "script, args, expected",
    [
        # An unknown name used to build the small CNN under that name.
        ("bench_monitors.py", ["--models", "resnet"], "--models takes mlp20, cnn, resnet50"),
        ("bench_real_models.py", ["--models", "resnet"], "--models takes resnet50, transformer"),
        # An unknown part used to be skipped without a word.
        ("bench_real_models.py", ["--parts", "fitt"], "--parts takes fixed, fit, precisebn"),
        ("bench_probe_parts.py", ["--models", "mlp"], "--models takes mlp20, cnn"),
        # 0 used to mean "the default" (`args.rounds or 30`).
        ("bench_probe_parts.py", ["--rounds", "0"], "expected a positive integer"),
        ("bench_real_models.py", ["--rounds", "-1"], "expected a positive integer"),
        ("bench_monitors.py", ["--probe", "many"], "expected a positive integer"),
        ("bench_long_run.py", ["--epochs", "0"], "expected a positive integer"),
        (
            "bench_lsuv_first_call.py",
            ["--models", "resnet"],
            "--models takes resnet50, efficientnetb0",
        ),
        ("bench_lsuv_first_call.py", ["--rounds", "0"], "expected a positive integer"),
        ("bench_dashboard.py", ["--layers", "0"], "expected a positive integer"),
    ],
)
def test_bad_arguments_are_rejected(script, args, expected):
    result = run(script, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Received" in result.stderr


def test_a_probe_larger_than_the_data_is_rejected():
    result = run("bench_monitors.py", "--models", "cnn", "--probe", "5000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "--probe can be at most 4096 for cnn. Received: 5000" in result.stderr


def test_probe_parts_reports_every_line():
    result = run("bench_probe_parts.py", "--models", "mlp20", "--rounds", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[mlp20] 325,386 parameters; probe 256 samples; 25 sites" in out
    for label in ("moments", "saturation", "dead units", "batch norm", "all", "predict"):
        assert f"\n  {label} " in out, out
    assert "forward, inference" in out and "forward, training" in out
    assert "attention" not in out  # no attention layer: the family is left out, not timed at 0
    assert "reductions add" in out and "all / predict" in out


def test_gpu_check_script_parses_and_names_its_limits():
    """`gpu_check.sh` runs only on a GPU machine: here, its syntax, and that each part
    runs under a time limit and the tests in the exact mode their comparisons need."""
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.count("timeout ") == 2  # the test suites and the benchmark
    for setting in (
        "NVIDIA_TF32_OVERRIDE=0",
        "xla_gpu_deterministic_ops",
        "KERAS_INITKIT_DETERMINISTIC",
    ):
        assert setting in text

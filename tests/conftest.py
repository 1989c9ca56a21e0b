"""Shared pytest fixtures."""

import os
import subprocess
import sys
import textwrap

import pytest

if (
    os.environ.get("KERAS_INITKIT_DETERMINISTIC") == "1"
    and os.environ.get("KERAS_BACKEND") == "torch"
):
    # benchmarks/gpu_check.sh on a GPU: deterministic CUDA kernels, as on a CPU
    # (warn_only: an op without a deterministic kernel warns instead of raising).
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture
def run_python(tmp_path):
    """Returns `run(code, timeout=180)`: runs `code` in a fresh interpreter.

    The child starts in `tmp_path` with this process's `sys.path` (so it
    imports the same packages) and environment, including `KERAS_BACKEND`.
    It returns the child's stdout and fails the test, showing stderr, if the
    child exits non-zero.
    """

    def run(code, timeout=180):
        paths = [os.path.abspath(p) for p in sys.path if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"Subprocess exited with {proc.returncode}.\n"
                f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-6000:]}"
            )
        return proc.stdout

    return run

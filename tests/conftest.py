"""Shared pytest fixtures."""

import os
import subprocess
import sys
import textwrap

import pytest


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

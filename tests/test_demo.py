"""examples/demo.py --quick runs, prints its table and writes TensorBoard logs."""

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import keras_initkit

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_quick(tmp_path):
    log_dir = tmp_path / "logs"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The script must import the keras_initkit this test session imports
    # (the installed wheel under tox, the source tree otherwise).
    package_root = str(Path(keras_initkit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(DEMO), "--quick", "--log-dir", str(log_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    lines = result.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("| init ")), None)
    assert header is not None, result.stdout
    rows = [line for line in lines[header + 2 :] if line.startswith("|")]
    names = [row.split("|")[1].strip() for row in rows]
    assert "keras-default" in names and len(names) >= 2, result.stdout

    for name in names:
        run_dir = log_dir / name
        assert list(run_dir.glob("train/events.out.tfevents.*")), f"no event file in {run_dir}"
        accumulator = EventAccumulator(str(run_dir / "train"), size_guidance={"tensors": 0})
        accumulator.Reload()
        assert "epoch_loss" in accumulator.Tags()["tensors"], accumulator.Tags()

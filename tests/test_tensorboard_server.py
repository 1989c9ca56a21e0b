"""A real TensorBoard server lists the monitors' run, tags and Custom Scalars layout."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest

from keras_initkit.callbacks import TrainingMonitor

WAIT_S = 90


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tensorboard_command():
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if os.path.exists(exe):
        return [exe]
    if shutil.which("tensorboard"):
        return [shutil.which("tensorboard")]
    return [sys.executable, "-m", "tensorboard.main"]


@pytest.fixture
def log_dir(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh", name="tanh"),
            keras.layers.Dense(8, activation="relu", name="relu"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    monitor = TrainingMonitor(x, log_dir=tmp_path, verbose=0)
    model.fit(x, x[:, :1], batch_size=8, epochs=2, callbacks=[monitor], verbose=0)
    return tmp_path


@pytest.fixture
def server(log_dir):
    port = _free_port()
    proc = subprocess.Popen(
        _tensorboard_command()
        + ["--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port)]
        + ["--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())


def test_tensorboard_server_lists_our_tags(server):
    base, proc = server
    deadline = time.monotonic() + WAIT_S
    tags = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, "tensorboard exited"
        try:
            tags = _get_json(f"{base}/data/plugin/scalars/tags").get("initkit", {})
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            tags = {}
        if "dead_fraction/relu" in tags and "saturated_fraction/tanh" in tags:
            break
        time.sleep(0.5)
    expected = {
        "saturated_fraction/tanh",
        "activation_mean/tanh",
        "abs_p98/tanh",
        "dead_fraction/relu",
        "firing_rate/relu",
        "activation_std/head",
    }
    assert expected <= set(tags)
    layout = _get_json(f"{base}/data/plugin/custom_scalars/layout")
    charts = {
        chart["title"]: chart["multiline"]["tag"]
        for category in layout["category"]
        for chart in category["chart"]
    }
    assert charts["saturated_fraction"] == ["^saturated_fraction/"]
    assert charts["dead_fraction"] == ["^dead_fraction/"]
    points = _get_json(f"{base}/data/plugin/scalars/scalars?run=initkit&tag=dead_fraction/relu")
    assert [p[1] for p in points] == [0, 4, 8]  # [wall_time, step, value]
    # The installed initkit tab (entry point tensorboard_plugins) is listed and draws the run.
    assert _get_json(f"{base}/data/plugins_listing")["initkit"]["enabled"] is True
    heatmap = _get_json(f"{base}/data/plugin/initkit/heatmap?run=initkit&metric=dead_fraction")
    assert heatmap["layers"] == ["relu"] and heatmap["steps"] == [0, 4, 8]

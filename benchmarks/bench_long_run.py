"""Long run: every monitor at update_freq=1 for many epochs on a tiny model.

Checks that resident memory (VmRSS from /proc/self/status) and open file descriptors
stay flat, that the event files grow linearly (bytes per epoch), and times
`keras-initkit report LOGDIR` on the result.

    python benchmarks/bench_long_run.py            # 200 epochs
    python benchmarks/bench_long_run.py --quick    # 20 epochs
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
from _cli import positive_int

from keras_initkit.callbacks import (
    BatchNormMonitor,
    DeadUnitMonitor,
    GradientMonitor,
    SaturationMonitor,
    TrainingMonitor,
)


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def event_bytes(log_dir):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(log_dir)
        for name in files
        if "tfevents" in name
    )


class Sampler(keras.callbacks.Callback):
    def __init__(self, log_dir):
        super().__init__()
        self.log_dir, self.rows = log_dir, []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append((epoch + 1, rss_mib(), open_fds(), event_bytes(self.log_dir)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 epochs instead of 200")
    parser.add_argument("--epochs", type=positive_int, default=None)
    args = parser.parse_args(argv)
    epochs = (20 if args.quick else 200) if args.epochs is None else args.epochs
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, activation="tanh", name="tanh"),
            keras.layers.Dense(32, activation="relu", name="relu"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    log_dir = tempfile.mkdtemp(prefix="initkit-long-")
    probe = (x[:32], y[:32])
    monitors = [
        TrainingMonitor(probe, log_dir=log_dir, update_freq=1, histograms=True, gradients=True),
        SaturationMonitor(x[:32], log_dir=os.path.join(log_dir, "sat"), update_freq=1),
        DeadUnitMonitor(x[:32], log_dir=os.path.join(log_dir, "dead"), update_freq=1),
        BatchNormMonitor(x[:32], log_dir=os.path.join(log_dir, "bn"), update_freq=1),
        GradientMonitor(probe, log_dir=os.path.join(log_dir, "grad"), update_freq=1),
    ]
    for monitor in monitors:
        monitor.verbose = 0
    sampler = Sampler(log_dir)
    import warnings

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, batch_size=16, epochs=epochs, callbacks=[*monitors, sampler], verbose=0)
    fit_s = time.perf_counter() - start
    rows = sampler.rows
    rss = [r[1] for r in rows]
    fds = [r[2] for r in rows]
    sizes = np.array([r[3] for r in rows], dtype=float)
    steps = 4 * epochs
    warm = len(rows) // 10  # skip the first epochs (tracing, allocator warm-up)
    per_epoch = np.diff(sizes[warm:])
    slope = np.polyfit(np.arange(warm, len(rows)), sizes[warm:], 1)[0]
    print(f"backend {keras.backend.backend()}, {epochs} epochs, {steps} steps, 5 monitors")
    print(f"fit: {fit_s:.1f} s ({1000 * fit_s / steps:.1f} ms per step, 5 probe passes each)")
    print(
        f"RSS MiB: first {rss[0]:.1f}, after warm-up {rss[warm]:.1f}, last {rss[-1]:.1f}, "
        f"max {max(rss):.1f}"
    )
    print(f"open fds: first {fds[0]}, last {fds[-1]}, max {max(fds)}")
    print(
        f"event files: {sizes[-1] / 1e6:.2f} MB; bytes/epoch fit {slope:.0f}, "
        f"min {per_epoch.min():.0f}, max {per_epoch.max():.0f}"
    )
    start = time.perf_counter()
    report = subprocess.run(
        [sys.executable, "-m", "keras_initkit", "report", log_dir],
        capture_output=True,
        text=True,
        check=False,
    )
    report_s = time.perf_counter() - start
    print(
        f"keras-initkit report: exit {report.returncode}, {report_s:.1f} s "
        f"(process start and imports included), {len(report.stdout.splitlines())} lines"
    )


if __name__ == "__main__":
    main()

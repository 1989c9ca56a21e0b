"""Benchmark `keras_initkit.lsuv_init` against the published sub-model approach.

    python benchmarks/bench_lsuv.py            # full run (MLPs of depth 25-200, ResNet50)
    python benchmarks/bench_lsuv.py --quick    # smoke run: small models, one repeat

The baseline re-implements what the LSUV-keras script does: for each target layer,
in order, build `keras.Model(model.inputs, layer.output)`, run it with `predict` on
the batch, and after each rescale (`set_weights`) run it again — O(L²·T) layer calls.
Both compute the paper's statistic, the variance of each layer's pre-activation: the
baseline switches the measured layer's own activation off while it measures it (the
MLPs here fuse `tanh` into `Dense`), and both use the same relative tolerance rule,
so both must end with the same kernels (checked, "agree" column).

Printed per model: the baseline's time, `lsuv_init`'s time (median of repeats, from
freshly reset weights), the speed ratio, `lsuv_init`'s time as a multiple of one warm
eager forward pass `model(x, training=False)` on the same batch, and t(200)/t(100).
Then PASS/FAIL for each target. Timings are wall-clock on whatever machine runs it.
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_initkit as ik  # noqa: E402

TARGET = 1.0
TOLERANCE = 0.1
MAX_ITERATIONS = 10


def mlp(depth, width=256, seed=0):
    inputs = keras.Input((width,))
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(
            width,
            activation="tanh",
            kernel_initializer=keras.initializers.Orthogonal(seed=seed + i),
        )(h)
    return keras.Model(inputs, h, name=f"mlp{depth}")


def resnet50():
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)


def targets_of(model):
    return [layer for layer in model.layers if isinstance(layer, ik.probe.KERNEL_LAYERS)]


def submodel_lsuv(model, x, layers):
    """The published approach (LSUV-keras), with the paper's relative tolerance.

    Returns the kernel scale and the seconds spent, per layer.
    """
    scales, seconds = [], []
    for layer in layers:
        start = time.perf_counter()
        sub = keras.Model(model.inputs, layer.output)
        activation = layer.activation
        layer.activation = keras.activations.linear  # measure the pre-activation
        try:
            variance = float(np.var(sub.predict(x, batch_size=len(x), verbose=0)))
            scale, iterations = 1.0, 0
            while abs(variance - TARGET) > TOLERANCE * TARGET and iterations < MAX_ITERATIONS:
                if variance <= 0:
                    break
                weights = layer.get_weights()
                factor = np.sqrt(TARGET / variance)
                weights[0] = weights[0] * factor
                layer.set_weights(weights)
                scale *= factor
                variance = float(np.var(sub.predict(x, batch_size=len(x), verbose=0)))
                iterations += 1
        finally:
            layer.activation = activation
        scales.append(scale)
        seconds.append(time.perf_counter() - start)
    return scales, seconds


def timed(fn, repeats):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench(model, x, repeats, baseline_layers=None):
    """Time forward, lsuv_init and the sub-model baseline on `model` from one start."""
    initial = model.get_weights()
    layers = targets_of(model)
    model(x, training=False)  # warm up
    forward, _ = timed(lambda: model(x, training=False), max(repeats, 5))

    def ours():
        model.set_weights(initial)
        start = time.perf_counter()
        report = ik.lsuv_init(model, x, verbose=0)
        return time.perf_counter() - start, report

    ours()  # warm-up: first-time op kernels
    runs = [ours() for _ in range(repeats)]
    t_ours = statistics.median(t for t, _ in runs)
    report = runs[-1][1]
    ours_scales = [report[layer.name].scale for layer in layers]  # model.layers order

    model.set_weights(initial)
    measured = layers if baseline_layers is None else layers[:baseline_layers]
    base_scales, seconds = submodel_lsuv(model, x, measured)
    t_base = sum(seconds)
    extrapolated = len(measured) < len(layers)
    if extrapolated:
        # The sub-model for layer i has i layers: fit seconds_i = a + b·i on the
        # measured layers and sum the fit over all of them.
        b, a = np.polyfit(np.arange(1, len(seconds) + 1), seconds, 1)
        t_base = sum(seconds) + sum(a + b * i for i in range(len(seconds) + 1, len(layers) + 1))
    agree = max(abs(a - b) / b for a, b in zip(base_scales, ours_scales))
    model.set_weights(initial)
    return {
        "model": model.name,
        "targets": len(layers),
        "forward": forward,
        "ours": t_ours,
        "baseline": t_base,
        "extrapolated": extrapolated,
        "agree": agree,
        "converged": report.converged,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, one repeat")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.quick:
        depths, repeats, with_resnet = (10, 20), 1, False
    else:
        depths, repeats, with_resnet = (25, 50, 100, 200), 3, True
    # The full sub-model baseline at depth 200 takes ~25 min on 2 cores: time its first
    # 50 layers and extrapolate (flagged with * in the table).
    partial = {200: 50}
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)"
        + (" [--quick]" if args.quick else "")
    )
    rows = []
    x_mlp = rng.standard_normal((256, 256)).astype("float32")
    for depth in depths:
        rows.append(bench(mlp(depth), x_mlp, repeats, partial.get(depth)))
        print(f"  done {rows[-1]['model']}", flush=True)
    if with_resnet:
        x_img = rng.standard_normal((32, 64, 64, 3)).astype("float32")
        rows.append(bench(resnet50(), x_img, repeats))
        print("  done resnet50", flush=True)

    header = (
        f"{'model':<10} {'targets':>7} {'forward s':>10} {'lsuv_init s':>12} "
        f"{'x forward':>10} {'sub-model s':>12} {'speed-up':>9} {'agree':>8}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        star = "*" if r["extrapolated"] else ""
        print(
            f"{r['model']:<10} {r['targets']:>7} {r['forward']:>10.4f} {r['ours']:>12.4f} "
            f"{r['ours'] / r['forward']:>10.2f} {r['baseline']:>11.2f}{star:1} "
            f"{r['baseline'] / r['ours']:>8.0f}x {r['agree']:>8.1e}"
        )
    if any(r["extrapolated"] for r in rows):
        print(
            "* baseline timed on the first 50 layers only, extrapolated to all of them "
            "by a linear fit of seconds per layer against its depth (a sub-model of "
            "depth i costs ~a + b·i)"
        )
    by_depth = {r["model"]: r for r in rows}
    checks = []
    if "mlp100" in by_depth and "mlp200" in by_depth:
        ratio = by_depth["mlp200"]["ours"] / by_depth["mlp100"]["ours"]
        print(f"\nt(200)/t(100) = {ratio:.2f}")
        speedup = by_depth["mlp100"]["baseline"] / by_depth["mlp100"]["ours"]
        checks.append(("speed-up over sub-models at depth 100 >= 100x", speedup >= 100))
        checks.append(("t(200)/t(100) <= 2.5", ratio <= 2.5))
    for r in rows:
        checks.append(
            (f"{r['model']}: lsuv_init <= 5 forward passes", r["ours"] / r["forward"] <= 5)
        )
        checks.append((f"{r['model']}: same kernels as the baseline", r["agree"] < 1e-3))
        checks.append((f"{r['model']}: all layers converged", r["converged"]))
    print()
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()

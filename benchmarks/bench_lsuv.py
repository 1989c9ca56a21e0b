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


class Case:
    """One model, its batch, its initial weights and the timings gathered so far."""

    def __init__(self, model, x, baseline_layers=None):
        self.model, self.x, self.baseline_layers = model, x, baseline_layers
        self.name = model.name
        self.initial = model.get_weights()
        self.layers = targets_of(model)
        self.forward, self.ours, self.ratio = [], [], []  # (wall, cpu) per round
        self.report = None

    def clock(self, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        return (time.perf_counter() - wall, time.process_time() - cpu), result

    def warm_up(self):
        self.model(self.x, training=False)
        self.model.set_weights(self.initial)
        ik.lsuv_init(self.model, self.x, verbose=0)  # first-time op kernels

    def round(self):
        """One forward pass (best of 3) and one lsuv_init from the initial weights."""
        forward = min(
            (self.clock(lambda: self.model(self.x, training=False))[0] for _ in range(3)),
            key=lambda t: t[0],
        )
        self.model.set_weights(self.initial)
        ours, self.report = self.clock(lambda: ik.lsuv_init(self.model, self.x, verbose=0))
        self.forward.append(forward)
        self.ours.append(ours)
        self.ratio.append((ours[0] / forward[0], ours[1] / forward[1]))

    def baseline(self):
        """Run the sub-model approach once; compare its kernels with lsuv_init's."""
        ours_scales = [self.report[layer.name].scale for layer in self.layers]
        self.model.set_weights(self.initial)
        measured = self.layers[: self.baseline_layers]
        base_scales, seconds = submodel_lsuv(self.model, self.x, measured)
        self.model.set_weights(self.initial)
        self.extrapolated = len(measured) < len(self.layers)
        self.t_base = sum(seconds)
        if self.extrapolated:
            # The sub-model for layer i has i layers: fit seconds_i = a + b·i on the
            # measured layers and add the fit for the others.
            b, a = np.polyfit(np.arange(1, len(seconds) + 1), seconds, 1)
            n = len(self.layers)
            self.t_base += sum(a + b * i for i in range(len(seconds) + 1, n + 1))
        self.agree = max(abs(a - b) / b for a, b in zip(base_scales, ours_scales))

    def median(self, values, cpu=False):
        return statistics.median(v[1 if cpu else 0] for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, one round")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.quick:
        depths, rounds, with_resnet = (10, 20), 1, False
    else:
        depths, rounds, with_resnet = (25, 50, 100, 200), 5, True
    # The full sub-model baseline at depth 200 takes ~25 min on 2 cores: time its first
    # 50 layers and extrapolate (flagged with * in the table).
    partial = {200: 50}
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)"
        + (" [--quick]" if args.quick else "")
        + f", load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    x_mlp = rng.standard_normal((256, 256)).astype("float32")
    cases = [Case(mlp(depth), x_mlp, partial.get(depth)) for depth in depths]
    if with_resnet:
        cases.append(Case(resnet50(), rng.standard_normal((32, 64, 64, 3)).astype("float32")))
    for case in cases:
        case.warm_up()
    # Interleaved rounds (rotating the order) so that load from other processes hits
    # every model alike; ratios are medians of per-round ratios.
    for r in range(rounds):
        for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
            case.round()
    print(f"  {rounds} round(s) of forward + lsuv_init done", flush=True)
    for case in cases:
        case.baseline()
        print(f"  baseline {case.name} done", flush=True)

    header = (
        f"{'model':<10} {'targets':>7} {'forward s':>10} {'lsuv_init s':>12} "
        f"{'x forward':>10} {'(cpu)':>6} {'sub-model s':>12} {'speed-up':>9} {'agree':>8}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for c in cases:
        ours = c.median(c.ours)
        print(
            f"{c.name:<10} {len(c.layers):>7} {c.median(c.forward):>10.4f} {ours:>12.4f} "
            f"{c.median(c.ratio):>10.2f} {c.median(c.ratio, cpu=True):>6.2f} "
            f"{c.t_base:>11.1f}{'*' if c.extrapolated else ' '} "
            f"{c.t_base / ours:>8.0f}x {c.agree:>8.1e}"
        )
    print(
        f"times: medians over {rounds} interleaved round(s); x forward: median of the "
        "per-round ratio lsuv_init / forward pass (wall; cpu = process CPU time)"
    )
    if any(c.extrapolated for c in cases):
        print(
            "* baseline timed on the first 50 layers only, extrapolated to all of them "
            "by a linear fit of seconds per layer against its depth (a sub-model of "
            "depth i costs ~a + b·i)"
        )
    by_name = {c.name: c for c in cases}
    checks = []
    if "mlp100" in by_name and "mlp200" in by_name:
        pairs = zip(by_name["mlp200"].ours, by_name["mlp100"].ours)
        scaling = [(a[0] / b[0], a[1] / b[1]) for a, b in pairs]
        wall = statistics.median(r[0] for r in scaling)
        cpu = statistics.median(r[1] for r in scaling)
        print(f"\nt(200)/t(100) = {wall:.2f} (cpu {cpu:.2f}), median of per-round ratios")
        speedup = by_name["mlp100"].t_base / by_name["mlp100"].median(by_name["mlp100"].ours)
        checks.append(("speed-up over sub-models at depth 100 >= 100x", speedup >= 100))
        checks.append(("t(200)/t(100) <= 2.5", wall <= 2.5))
    for c in cases:
        checks.append((f"{c.name}: lsuv_init <= 5 forward passes", c.median(c.ratio) <= 5))
        checks.append((f"{c.name}: same kernels as the baseline", c.agree < 1e-3))
        checks.append((f"{c.name}: all layers converged", c.report.converged))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other processes share the CPUs)\n")
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()

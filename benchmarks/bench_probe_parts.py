"""Where a steady probe pass spends its time, reducer family by reducer family (TensorFlow).

Run from the repository root:

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_probe_parts.py [--models mlp20,cnn] [--rounds 40]

Models: bench_monitors.py's 20-layer MLP and small CNN (probe of 256 samples), and
bench_real_models.py's ResNet50 and 4-block Transformer encoder (probe of 32). On one
model, interleaved round by round, the CPU time (all threads) of one warm call of:

- `Probe(model, [R])` for each reducer family R alone (activation moments, saturation,
  dead units, batch-norm statistics, attention entropy), and with every family (what a
  `TrainingMonitor` update computes on the device);
- the references: a compiled forward pass in inference mode and in training mode
  (`tf.function(model(x, training=...))`, output brought to the host), and `predict` of
  the same batch.

Reading it: "all - training forward" is what the reductions add to the pass the probe
must run anyway (it measures what training sees: batch norm with batch statistics). A
family alone stops the pass after its last watched layer, so compare families with each
other, not with the forward passes. No target: this script explains the targets of
bench_monitors.py and bench_real_models.py (update / forward, update / predict, steady
update / recipe).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_initkit.probe import Probe  # noqa: E402
from keras_initkit.probe.reducers import (  # noqa: E402
    ActivationMoments,
    AttentionEntropy,
    BatchNormStatistics,
    DeadUnits,
    RecurrentGates,
    Saturation,
)

warnings.simplefilter("ignore")

FAMILIES = {
    "moments": ActivationMoments,
    "saturation": Saturation,
    "dead units": DeadUnits,
    "batch norm": BatchNormStatistics,
    "attention": AttentionEntropy,
}


def build(name):
    """`(model, probe batch)`."""
    if name in ("mlp20", "cnn"):
        import bench_monitors

        model, x, _ = bench_monitors.build(name)
        return model, x[:256]
    import bench_real_models

    return bench_real_models.BUILDERS[name](), bench_real_models.data(name, 32, seed=1)[0]


def bench(name, rounds):
    import tensorflow as tf

    model, x = build(name)
    tensor = tf.constant(x)
    every = [ActivationMoments(), Saturation(), DeadUnits(), BatchNormStatistics()]
    every += [RecurrentGates(), AttentionEntropy()]
    probes = {label: Probe(model, [cls()]) for label, cls in FAMILIES.items()}
    probes = {label: p for label, p in probes.items() if p.sites}  # families that apply
    probes["all"] = Probe(model, every)
    inference = tf.function(lambda a: model(a, training=False))
    training = tf.function(lambda a: model(a, training=True))
    weights = [v.numpy() for v in model.non_trainable_variables]  # training=True moves them
    calls = {label: (lambda p=p: np.asarray(p.vector(tensor))) for label, p in probes.items()}
    calls["forward, inference"] = lambda: inference(tensor).numpy()
    calls["forward, training"] = lambda: training(tensor).numpy()
    calls["predict"] = lambda: model.predict(x, batch_size=len(x), verbose=0)
    for call in calls.values():  # trace, then warm
        call()
        call()
    times = {label: [] for label in calls}
    labels = list(calls)
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            start = time.process_time()
            calls[label]()
            times[label].append(time.process_time() - start)
    for v, w in zip(model.non_trainable_variables, weights):
        v.assign(w)
    ms = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    sites = len(probes["all"].sites)
    print(f"\n[{name}] {model.count_params():,} parameters; probe {len(x)} samples; {sites} sites")
    for label, value in ms.items():
        n = f" ({len(probes[label].sites)} sites)" if label in probes else ""
        print(f"  {label:<20} {value:8.2f} ms CPU{n}")
    added = ms["all"] - ms["forward, training"]
    print(
        f"  reductions add {added:.2f} ms to the training-mode forward pass "
        f"({added / max(sites, 1) * 1e3:.0f} us per site); all / forward (inference) "
        f"{ms['all'] / ms['forward, inference']:.2f}x, training forward / predict "
        f"{ms['forward, training'] / ms['predict']:.2f}x, all / predict "
        f"{ms['all'] / ms['predict']:.2f}x"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp20,cnn,transformer,resnet50")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            "bench_probe_parts.py measures TensorFlow's executor (JAX compiles the whole "
            f"probe with XLA; torch runs it eagerly). Received backend: {keras.backend.backend()!r}"
        )
    names = args.models.split(",")
    for name in names:
        if name not in ("mlp20", "cnn", "resnet50", "transformer"):
            raise SystemExit(
                "--models takes mlp20, cnn, resnet50 and transformer, comma-separated. "
                f"Received: {name!r}"
            )
    print(f"keras {keras.__version__}, backend tensorflow, {os.cpu_count()} CPUs")
    for name in names:
        bench(name, args.rounds)


if __name__ == "__main__":
    main()

"""Where a probe pass spends its time: steady passes (TensorFlow), first calls (JAX).

Run from the repository root:

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_probe_parts.py [--models mlp20,cnn] [--rounds 40]
    KERAS_BACKEND=jax python benchmarks/bench_probe_parts.py [--models resnet50] [--rounds 2]

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

On JAX (where a probe is compiled with XLA at its first call) it splits first calls
instead, each on a fresh model after one round on a throwaway model: `predict`'s first
call, and the first `vector` of a probe with every family and of one with the batch-norm
family only (the training-mode forward pass the probe must run, with its per-channel
moments). JAX's own monitoring events give the time spent tracing to a jaxpr, lowering
it to StableHLO and in XLA's compile; the rest is running and host work.
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
from _cli import known_names, positive_int  # noqa: E402

from keras_initkit.checks import book  # noqa: E402
from keras_initkit.probe import Probe  # noqa: E402
from keras_initkit.probe.reducers import (  # noqa: E402
    ActivationMoments,
    AttentionEntropy,
    BatchNormStatistics,
    DeadUnits,
    Saturation,
)

warnings.simplefilter("ignore")

MODELS = ("mlp20", "cnn", "resnet50", "transformer")
FAMILIES = {
    "moments": ActivationMoments,
    "saturation": Saturation,
    "dead units": DeadUnits,
    "batch norm": BatchNormStatistics,
    "attention": AttentionEntropy,
}


def every_family():
    """Every check's reducers, as `diagnose` and a `TrainingMonitor` update compute them."""
    return book.reducers(book.default_checks())


def build(name):
    """`(model, probe batch)`."""
    if name in MODELS[:2]:
        import bench_monitors

        model, x, _ = bench_monitors.build(name)
        return model, x[:256]
    import bench_real_models

    return bench_real_models.BUILDERS[name](), bench_real_models.data(name, 32, seed=1)[0]


def bench(name, rounds):
    import tensorflow as tf

    model, x = build(name)
    tensor = tf.constant(x)
    probes = {label: Probe(model, [cls()]) for label, cls in FAMILIES.items()}
    probes = {label: p for label, p in probes.items() if p.sites}  # families that apply
    probes["all"] = Probe(model, every_family())
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


def first_calls_jax(name, rounds):
    """First calls on fresh models, split by JAX's compile events (seconds, wall)."""
    import gc

    import jax

    events = {}

    def listen(event, duration, **kwargs):
        events[event] = events.get(event, 0.0) + duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    phases = {
        "trace": "/jax/core/compile/jaxpr_trace_duration",
        "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "compile": "/jax/core/compile/backend_compile_duration",
    }
    calls = {
        "predict": lambda model, x: model.predict(x, batch_size=len(x), verbose=0),
        "probe, all families": lambda model, x: Probe(model, every_family()).vector(x),
        "probe, batch norm only": lambda model, x: Probe(model, [BatchNormStatistics()]).vector(x),
    }
    results = {label: [] for label in calls}
    for r in range(rounds + 1):  # round 0 pays what a process pays once
        for label, call in calls.items():
            model, x = build(name)
            gc.collect()
            events.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            np.asarray(call(model, x))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if r:
                results[label].append((wall, cpu, *(events.get(e, 0.0) for e in phases.values())))
    print(f"\n[{name}] first calls on fresh models, median of {rounds}; seconds")
    print(f"  {'':<24} {'wall':>6} {'cpu':>6} {'trace':>6} {'lower':>6} {'compile':>8}")
    medians = {}
    for label, rows in results.items():
        medians[label] = [statistics.median(column) for column in zip(*rows)]
        wall, cpu, trace, lower, compile_ = medians[label]
        print(f"  {label:<24} {wall:6.2f} {cpu:6.2f} {trace:6.2f} {lower:6.2f} {compile_:8.2f}")
    base = medians["predict"]
    for label in list(calls)[1:]:
        print(
            f"  {label} / predict: wall {medians[label][0] / base[0]:.2f}x, cpu "
            f"{medians[label][1] / base[1]:.2f}x, XLA compile {medians[label][4] / base[4]:.2f}x"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="default: all four (TF), resnet50 (JAX)")
    parser.add_argument(
        "--rounds", type=positive_int, default=None, help="default: 30 (TF), 2 (JAX)"
    )
    args = parser.parse_args()
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        parser.error(
            "splits TensorFlow's steady passes and JAX's first calls (torch runs a probe "
            f"eagerly): expected KERAS_BACKEND tensorflow or jax. Received: {backend!r}"
        )
    jax_mode = backend == "jax"
    default = "resnet50" if jax_mode else "mlp20,cnn,transformer,resnet50"
    names = known_names(parser, "--models", args.models or default, MODELS)
    rounds = (2 if jax_mode else 30) if args.rounds is None else args.rounds
    print(f"keras {keras.__version__}, backend {backend}, {os.cpu_count()} CPUs")
    for name in names:
        if jax_mode:
            first_calls_jax(name, rounds)
        else:
            bench(name, rounds)


if __name__ == "__main__":
    main()

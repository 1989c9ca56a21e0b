"""Synthetic keras_initkit logs for tests, benchmarks and screenshots.

`write_logs(log_dir)` writes runs x layers x steps through the TF-free
`keras_initkit.summary.EventFileSummaryWriter` exactly as the monitors do (one update per
step holding every `<metric>/<layer>` scalar, `write_meta` with the forward order and
thresholds, `write_findings` with planted findings), so the dashboard, the report and
their tests read what a real fit writes.

    python -m keras_initkit.dashboard.fixtures /tmp/logs --layers 160 --steps 200
"""

import argparse
import os

import numpy as np

from keras_initkit import summary

THRESHOLDS = {"dead_fraction": 0.5, "saturated_fraction": 0.2, "update_ratio": 1.0}
METRICS = ("dead_fraction", "activation_std", "gradient_norm", "saturated_fraction", "update_ratio")
RUNS = ("keras-default", "normalized", "identity", "lsuv")
FIX_DEAD = "try He or LSUV initialization (keras_initkit.lsuv_init)."
FIX_SATURATED = "use a smaller-scale initializer (glorot) or LSUV."


def _series(run_index, layer, depth, steps, metric, rng):
    """A plausible, deterministic curve: deeper layers worse in the first runs."""
    t = steps / max(steps[-1], 1)
    d = layer / max(depth - 1, 1)
    badness = max(0.0, 1.0 - run_index / 2)  # run 0 worst, runs >= 2 healthy
    noise = rng.normal(0, 0.01, size=steps.size)
    if metric == "dead_fraction":
        return np.clip(badness * d * (0.4 + 0.6 * t) + noise, 0, 1)
    if metric == "saturated_fraction":
        return np.clip(0.05 + 0.3 * badness * (1 - d) * (1 - t) + noise, 0, 1)
    if metric == "activation_std":
        return np.exp(-3 * badness * d) * (1 + 0.1 * t) * (1 + noise)
    if metric == "gradient_norm":
        return 10.0 ** (-4 * badness * (1 - d) - 1) * (1 + noise)
    if metric == "update_ratio":
        return 10.0 ** (-3 + 2 * badness * t) * (1 + noise)
    return rng.normal(size=steps.size)


def planted_findings(run_index, layer_names, steps):
    """The findings `write_logs` writes for a run (what `_series` makes cross a threshold)."""
    depth = len(layer_names)
    if run_index >= 2:
        return []
    found = []
    for i, name in enumerate(layer_names):
        if i >= depth // 2:
            found.append(
                {
                    "rule": "dead_fraction",
                    "layer": name,
                    "step": int(steps[min(len(steps) - 1, 2 + i % 3)]),
                    "value": 0.5 + 0.5 * i / depth,
                    "message": f"{round(50 + 50 * i / depth)}% of units dead",
                    "fix": FIX_DEAD,
                    "metric": "dead_fraction",
                    "threshold": THRESHOLDS["dead_fraction"],
                }
            )
    if run_index == 0:
        for i, name in enumerate(layer_names[:3]):
            found.append(
                {
                    "rule": "saturated_fraction",
                    "layer": name,
                    "step": int(steps[0]),
                    "value": 0.3 - 0.02 * i,
                    "message": "30% of activations saturated",
                    "fix": FIX_SATURATED,
                    "metric": "saturated_fraction",
                    "threshold": THRESHOLDS["saturated_fraction"],
                }
            )
    return found


def layer_names(depth, run_index=0, stable=True):
    """`dense_0 ...` (stable) or Keras' per-process counting (`dense_<offset + i>`)."""
    offset = 0 if stable else run_index * depth
    return [f"dense_{offset + i}" for i in range(depth)]


def write_logs(
    log_dir,
    runs=RUNS,
    layers=8,
    steps=20,
    metrics=METRICS,
    step_every=5,
    stable_names=True,
    meta=True,
    findings=True,
    seed=0,
):
    """Write `<log_dir>/<run>/initkit` for each of `runs`; returns `{run: layer names}`.

    Args:
        log_dir: the directory the runs go to.
        runs: run names.
        layers: layers per run.
        steps: updates per run (at steps 0, step_every, 2 * step_every, ...).
        metrics: metrics logged for every layer.
        step_every: training steps between updates.
        stable_names: the same layer names in every run; False names them as Keras does
            when one process builds the runs' models in turn (`dense_8 ...` in run 2).
        meta: write the `initkit/layers` record (forward order, thresholds).
        findings: write the planted findings (`planted_findings`).
        seed: the noise's seed.
    """
    rng = np.random.default_rng(seed)
    step_values = np.arange(steps) * step_every
    written = {}
    for r, run in enumerate(runs):
        names = layer_names(layers, r, stable_names)
        curves = {
            (metric, i): _series(r, i, layers, step_values.astype(float), metric, rng)
            for metric in metrics
            for i in range(layers)
        }
        writer = summary.EventFileSummaryWriter(summary.run_dir(os.path.join(log_dir, run)))
        if meta:
            thresholds = {m: v for m, v in THRESHOLDS.items() if m in metrics}
            writer.write_meta(0, layers=names, thresholds=thresholds)
        planted = planted_findings(r, names, step_values) if findings else []
        for k, step in enumerate(step_values):
            writer.write(
                int(step),
                scalars={
                    f"{metric}/{name}": float(curves[metric, i][k])
                    for metric in metrics
                    for i, name in enumerate(names)
                },
            )
            fired = [f for f in planted if f["step"] <= step]
            if findings and (k == len(step_values) - 1 or k % 5 == 4):
                writer.write_findings(int(step), fired)
        writer.close()
        written[run] = names
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log_dir")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=len(RUNS))
    args = parser.parse_args(argv)
    runs = RUNS[: args.runs] if args.runs <= len(RUNS) else [f"run_{i}" for i in range(args.runs)]
    write_logs(args.log_dir, runs=runs, layers=args.layers, steps=args.steps)
    print(args.log_dir)


def tensorboard_app(log_dir):
    """TensorBoard's WSGI app over `log_dir` with only the `initkit` plugin, loaded.

    As `tensorboard --logdir` builds it (multiplexer, data provider, the default sampling
    of 1000 scalars per tag), without a server: for werkzeug's test client and benchmarks.
    Returns `(app, plugin)`.
    """
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_ingester, plugin_event_multiplexer
    from tensorboard.backend.event_processing import data_provider as provider_module
    from tensorboard.plugins import base_plugin

    from keras_initkit.dashboard.plugin import InitkitPlugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE
    )
    multiplexer.AddRunsFromDirectory(os.fspath(log_dir))
    multiplexer.Reload()
    provider = provider_module.MultiplexerDataProvider(multiplexer, os.fspath(log_dir))
    context = base_plugin.TBContext(
        logdir=os.fspath(log_dir), multiplexer=multiplexer, data_provider=provider
    )
    plugin = InitkitPlugin(context)
    return application.TensorBoardWSGI([plugin], data_provider=provider), plugin


if __name__ == "__main__":
    main()

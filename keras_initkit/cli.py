"""The `keras-initkit` command (also `python -m keras_initkit`).

    keras-initkit report LOGDIR [--format text|markdown|json] [--all]
    keras-initkit demo [DEMO OPTIONS]

`report` reads the event files the monitors write (`LOGDIR/initkit`, `LOGDIR` itself,
or every `initkit` run below `LOGDIR`, e.g. one per demo run) with TensorBoard's own
reader and prints, per run, layer and headline metric (`--all`: every metric), the
first and the latest value and the trend (the relative change
`(last − first) / |first|`; "flat" within 5%), marking flagged values with `!` under
the same per-value rules as `diagnose` (`keras_initkit.health.DEFAULT_THRESHOLDS`).
The cross-layer rules of `diagnose` (activation std and gradient norm through depth)
need the layers' forward order and kernels, which event files do not record: `report`
does not apply them. `demo` runs the repository's `examples/demo.py` with the given
options (it is not part of the installed package).

Exit codes: 0 success, 2 usage error, missing directory or no keras_initkit events.
"""

import argparse
import json
import os
import runpy
import sys

from keras_initkit.health import DEFAULT_THRESHOLDS, flagged

RUN_NAME = "initkit"  # `keras_initkit.summary.RUN_NAME`, without importing TensorBoard writers
# The DESIGN metric names: a run holding none of them is not ours.
METRICS = (
    "activation_mean",
    "activation_std",
    "saturated_fraction",
    "dead_fraction",
    "inactive_fraction",
    "bn_mean_shift",
    "bn_std_ratio",
    "gradient_norm",
    "update_ratio",
)
FLAT = 0.05  # a relative change below 5% is "flat"
DEMO_DESCRIPTION = (
    "Run examples/demo.py (deep plain net, initializations compared, TensorBoard logs). "
    "Options after 'demo' go to the demo; 'keras-initkit demo --help' shows them."
)


class UsageError(Exception):
    """A problem with the command line's arguments: message on stderr, exit code 2."""


def _has_events(path):
    try:
        return any(name.startswith("events.out.tfevents.") for name in os.listdir(path))
    except OSError:
        return False


def find_runs(log_dir):
    """Directories under `log_dir` holding our event files, as `(label, path)`."""
    if not os.path.isdir(log_dir):
        raise UsageError(f"log directory {log_dir!r} does not exist or is not a directory")
    runs = []
    for root, dirs, _ in os.walk(log_dir):
        dirs.sort()
        if os.path.basename(root) == RUN_NAME and _has_events(root):
            runs.append(root)
    if not runs and _has_events(log_dir):
        runs = [log_dir]
    return [(os.path.relpath(path, log_dir), path) for path in runs]


def read_run(path):
    """`{layer: {metric: [(step, value), ...]}}` of the scalar `<metric>/<layer>` tags.

    Layers and metrics keep the order of their first appearance (the monitors write
    layers in forward order).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    layers = {}
    for tag in tags.get("tensors", []):
        metric, sep, layer = tag.partition("/")
        if not sep or not layer:
            continue
        series = []
        for event in accumulator.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if value.ndim != 0 or value.dtype.kind not in "fiu":
                break  # histograms and layouts: not a scalar series
            series.append((int(event.step), float(value)))
        if series:
            layers.setdefault(layer, {})[metric] = sorted(series)
    for tag in tags.get("scalars", []):  # event files written with scalars (TF1 style)
        metric, sep, layer = tag.partition("/")
        if sep and layer:
            series = [(int(e.step), float(e.value)) for e in accumulator.Scalars(tag)]
            layers.setdefault(layer, {}).setdefault(metric, sorted(series))
    if not any(metric in METRICS for metrics in layers.values() for metric in metrics):
        return {}
    return layers


def summarize(layers, thresholds=None, everything=False):
    """Per layer and metric: first/last step and value, trend and flags.

    Only the DESIGN metrics (`METRICS`) unless `everything`.
    """
    out = {}
    for layer, metrics in layers.items():
        for metric, series in metrics.items():
            if not everything and metric not in METRICS:
                continue
            (first_step, first), (last_step, last) = series[0], series[-1]
            change = (last - first) / abs(first) if first != 0 else None
            scale = max(abs(first), abs(last))
            if scale == 0 or abs(last - first) < FLAT * scale:
                trend = "flat"
            else:
                trend = "rising" if last > first else "falling"
            out.setdefault(layer, {})[metric] = {
                "first": first,
                "last": last,
                "first_step": first_step,
                "last_step": last_step,
                "updates": len(series),
                "change": change,
                "trend": trend,
                "first_flagged": flagged(metric, first, thresholds),
                "flagged": flagged(metric, last, thresholds),
            }
    return out


def _fmt(value, mark):
    return f"{value:.4g}" + ("!" if mark else "")


def _rows(summary):
    rows = []
    for layer, metrics in summary.items():
        for i, (metric, s) in enumerate(metrics.items()):
            change = "" if s["change"] is None or s["trend"] == "flat" else f" {s['change']:+.0%}"
            rows.append(
                [
                    layer if i == 0 else "",
                    metric,
                    _fmt(s["first"], s["first_flagged"]),
                    _fmt(s["last"], s["flagged"]),
                    s["trend"] + change,
                    f"{s['first_step']}..{s['last_step']} ({s['updates']})",
                ]
            )
    return ["layer", "metric", "first", "last", "trend", "steps (updates)"], rows


def _flag_count(summary):
    return sum(s["flagged"] for metrics in summary.values() for s in metrics.values())


def render_text(runs):
    lines = []
    for label, summary in runs.items():
        header, rows = _rows(summary)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines.append(f"Run {label}: {len(summary)} layer(s), {_flag_count(summary)} flagged")
        for row in [header, *rows]:
            cells = [
                c.ljust(w) if i in (0, 1, 4, 5) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            ]
            lines.append("  ".join(cells).rstrip())
        lines.append("")
    lines.append("! = flagged (keras_initkit.health.DEFAULT_THRESHOLDS)")
    return "\n".join(lines)


def render_markdown(runs):
    lines = []
    for label, summary in runs.items():
        header, rows = _rows(summary)
        lines.append(f"### Run `{label}` ({_flag_count(summary)} flagged)")
        lines.append("")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| --- | --- | ---: | ---: | --- | --- |")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        lines.append("")
    lines.append("`!` = flagged (`keras_initkit.health.DEFAULT_THRESHOLDS`)")
    return "\n".join(lines)


def render_json(runs):
    return json.dumps({"thresholds": DEFAULT_THRESHOLDS, "runs": runs}, indent=2)


def report(log_dir, fmt="text", everything=False):
    """The report of `log_dir` as a string; raises `UsageError` when there is none."""
    runs = {}
    for label, path in find_runs(log_dir):
        layers = read_run(path)
        if layers:
            runs[label] = summarize(layers, everything=everything)
    if not runs:
        raise UsageError(
            f"no keras_initkit events in {log_dir!r}: expected event files with "
            f"'<metric>/<layer>' tags in {os.path.join(log_dir, RUN_NAME)!r} (written by "
            "the keras_initkit.callbacks monitors with log_dir=...)"
        )
    return {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt](runs)


def demo_script():
    """Path of the repository's `examples/demo.py` next to this package, or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(os.path.dirname(here), "examples", "demo.py")
    return path if os.path.isfile(path) else None


def run_demo(args):
    """Run `examples/demo.py` in this interpreter with `args`; its exit code."""
    path = demo_script()
    if path is None:
        raise UsageError(
            "the demo is not installed with the package: it is examples/demo.py in the "
            "keras_initkit source repository; from a clone run `tox -e demo` or "
            "`python examples/demo.py` (it needs scikit-learn)"
        )
    saved = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exit:
        code = exit.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-initkit",
        description="keras_initkit: read the training-health logs, run the demo.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    rep = commands.add_parser(
        "report",
        help="summarize the keras_initkit TensorBoard logs of a directory",
        description=(
            "Print, per run, layer and metric, the first and latest logged value and the "
            "trend; values over the diagnose thresholds are marked '!'. Reads LOGDIR/initkit, "
            "LOGDIR itself, or every 'initkit' run below LOGDIR."
        ),
    )
    rep.add_argument("logdir", metavar="LOGDIR", help="log directory given to the monitors")
    rep.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="output format (default: text)",
    )
    rep.add_argument(
        "--all",
        action="store_true",
        dest="everything",
        help="show every logged metric, not only the headline ones "
        "(activation_mean/std, saturated/dead/inactive_fraction, bn_mean_shift, "
        "bn_std_ratio, gradient_norm, update_ratio)",
    )
    commands.add_parser(
        "demo",
        help="run the quick-start demo (examples/demo.py of a source checkout)",
        description=DEMO_DESCRIPTION,
        add_help=False,
    )
    return parser


def main(argv=None):
    """Entry point of `keras-initkit`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        if argv and argv[0] == "demo":
            if {"-h", "--help"} & set(argv[1:]):
                print("usage: keras-initkit demo [DEMO OPTIONS]\n\n" + DEMO_DESCRIPTION)
                if demo_script() is None:
                    return 0
                print()
            return run_demo(argv[1:])
        args = parser.parse_args(argv)
        print(report(args.logdir, args.format, args.everything))
        return 0
    except UsageError as error:
        print(f"keras-initkit: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

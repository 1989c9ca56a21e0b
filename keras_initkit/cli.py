"""The `keras-initkit` command (also `python -m keras_initkit`).

    keras-initkit report LOGDIR [--layers] [--all] [--format text|markdown|json]
                                [--html OUT.html]

`report` reads the event files the monitors write (`LOGDIR/initkit`, `LOGDIR` itself,
or every `initkit` run below `LOGDIR`, e.g. one per demo run) without TensorFlow
(`keras_initkit.dashboard.events`) and prints, per run:

- the findings: per rule and fix, the layers (as ranges in forward order), the step the
  rule first fired and the worst value. They come from the run's `initkit/findings`
  record (written by the monitors); a run without one gets them derived from its logged
  values and the thresholds;
- the worst layers of each metric at the latest update (`!` = beyond a threshold:
  above it, or below a lower-is-worse rule's, such as vanishing gradients).

`--layers` prints the per-layer table instead: per layer and headline metric (`--all`:
every metric), the first and the latest value and the trend (the relative change
`(last − first) / |first|`; "flat" within 5%; beyond ±1000%, from a first value near 0,
the factor `last / first`, or the direction alone where the sign changed or the first
is 0). `--html OUT.html` also writes the
dashboard's heatmaps and findings as one self-contained HTML file (no network needed
to open it).

Thresholds: those the run recorded (`initkit/layers`), else the rules of `diagnose`
(`keras_initkit.health.DEFAULT_THRESHOLDS`, by metric: `checks.book.metric_limits`,
imported only then: it imports Keras). The
cross-layer rules of `diagnose` (activation std and gradient norm through depth) need
the layers' kernels, which event files do not record: `report` does not apply them.

The demo is not a subcommand: it is `examples/demo.py` of the source repository
(`tox -e demo`), which needs scikit-learn and is not part of the installed package.

A corrupt event file is read up to its first corrupt record, as TensorBoard reads it,
and named on stderr (`keras-initkit: warning: corrupt event file ...`); the other files
and runs are reported as usual.

Exit codes: 0 success, 2 usage error, missing directory or no keras_initkit events.
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import warnings

from keras_initkit.dashboard import events, model

RUN_NAME = events.RUN_NAME
METRICS = events.METRICS  # the headline metrics; `--all` shows every logged one
FLAT = 0.05  # a relative change below 5% is "flat"
# Beyond a relative change of 1000% (a first value near 0), the trend shows the factor
# last / first (×11 and up) instead: "+6699627%" reads as noise.
RELATIVE = 10.0
WORST = 3  # layers listed per metric
DEMO_MESSAGE = (
    "the demo is not part of the installed package: it is examples/demo.py in the "
    "keras_initkit source repository; from a clone run `tox -e demo` (or `python "
    "examples/demo.py`, which needs scikit-learn)"
)


class UsageError(Exception):
    """A problem with the command line's arguments: message on stderr, exit code 2."""


@functools.cache
def default_thresholds():
    """`diagnose`'s default thresholds as `(upper, lower)` `{metric: value}` dicts (see
    `keras_initkit.checks.book.metric_limits`; imports Keras)."""
    from keras_initkit.checks.book import default_checks, metric_limits

    return metric_limits(default_checks())


def with_thresholds(run):
    """`run`, given `diagnose`'s default thresholds when it recorded none."""
    if run.has_thresholds:
        return run
    upper, lower = default_thresholds()
    return dataclasses.replace(run, thresholds=dict(upper), lower_thresholds=dict(lower))


def find_runs(log_dir):
    """Directories under `log_dir` holding our event files, as `(label, path)`."""
    try:
        return events.find_runs(log_dir)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None


def read_runs(log_dir):
    """The keras_initkit runs below `log_dir`, each with its thresholds (`with_thresholds`);
    `UsageError` when there is none."""
    runs = [
        with_thresholds(run)
        for label, path in find_runs(log_dir)
        if (run := events.read_run(path, label))
    ]
    if not runs:
        raise UsageError(
            f"no keras_initkit events in {log_dir!r}: expected event files with "
            f"'<metric>/<layer>' tags in {os.path.join(log_dir, RUN_NAME)!r} (written by "
            "the keras_initkit.callbacks monitors with log_dir=...)"
        )
    return runs


def summarize(run, everything=False):
    """Per layer and metric (forward order): first/last step and value, trend and flags.

    Only the headline metrics (`METRICS`) unless `everything`.
    """
    flagged = model.run_flagger(run)
    out = {}
    for layer in run.layers:
        for metric in model.metric_order(run.metrics):
            if not everything and metric not in METRICS:
                continue
            if layer not in run.series[metric]:
                continue
            steps, values = run.series[metric][layer]
            first_step, last_step = int(steps[0]), int(steps[-1])
            first, last = float(values[0]), float(values[-1])
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
                "updates": int(len(steps)),
                "change": change,
                "trend": trend,
                "first_flagged": bool(flagged(metric, first, layer, first_step)),
                "flagged": bool(flagged(metric, last, layer, last_step)),
            }
    return out


def findings(run):
    """`(grouped findings, source)`: the run's record, else derived from the values."""
    return model.findings(run, model.run_flagger(run))


def worst_layers(run):
    """Per headline metric at the latest update: `(metric, [(layer, value, flagged)],
    spread)`.

    Metrics with a threshold (and fractions) list their largest values; the others
    (`spread`) their smallest and largest.
    """
    flagged = model.run_flagger(run)
    out = []
    for metric in model.metric_order(run.metrics):
        if metric not in METRICS:
            continue
        latest = [(layer, float(v[-1]), int(s[-1])) for layer, (s, v) in run.series[metric].items()]
        spread = not flagged(metric, 1e300)  # no threshold: the smallest and the largest
        if spread:
            ranked = sorted(latest, key=lambda lvs: lvs[1])
            top = ranked[:1] + ranked[-1:] if len(ranked) > 1 else ranked
        else:
            top = sorted(latest, key=lambda lvs: (math.isfinite(lvs[1]), -lvs[1]))[:WORST]
        marked = [(layer, v, bool(flagged(metric, v, layer, step))) for layer, v, step in top]
        out.append((metric, marked, spread))
    return out


def _fmt(value, mark=False):
    return f"{value:.4g}" + ("!" if mark else "")


def _worst_text(value):
    return value if isinstance(value, str) else ("—" if value is None else _fmt(value))


def render_summary(runs):
    lines = []
    for run in runs:
        groups, source = findings(run)
        steps = sorted({int(s) for m in run.series for s in run.steps(m).tolist()})
        span = f"steps {steps[0]}..{steps[-1]}, {len(steps)} updates" if steps else "no updates"
        lines.append(
            f"Run {run.label}: {len(run.layers)} layer(s), {span}, "
            # A finding per layer, as `TrainingMonitor.findings` and `diagnose` count.
            + (
                f"{sum(g['count'] for g in groups)} finding(s) in {len(groups)} group(s)"
                if groups
                else "no findings"
            )
            + (" (derived from thresholds)" if source == "derived" else "")
        )
        for g in groups:
            first = "—" if g["first_step"] is None else g["first_step"]
            lines.append(
                f"  ! {g['rule']} from step {first}: {g['layers']}; worst "
                f"{_worst_text(g['worst'])}"
                + (f" ({g['worst_layer']})" if g["worst_layer"] and g["count"] > 1 else "")
            )
            if g["fix"]:
                lines.append(f"      fix: {g['fix']}")
        worst = worst_layers(run)
        if worst:
            lines.append("  worst layers at the latest update:")
            width = max(len(metric) for metric, _, _ in worst)
            for metric, top, spread in worst:
                cells = ", ".join(f"{layer} {_fmt(v, mark)}" for layer, v, mark in top)
                if spread and len(top) == 2:
                    (low, lv, lm), (high, hv, hm) = top
                    cells = f"lowest {low} {_fmt(lv, lm)}, highest {high} {_fmt(hv, hm)}"
                lines.append(f"    {metric.ljust(width)}  {cells}")
        lines.append("")
    lines.append(
        "! = beyond a threshold where its rule judges the layer (above it; below it for "
        "lower-is-worse metrics). "
        "Per-layer table: --layers; dashboard: --html OUT.html"
    )
    return "\n".join(lines)


def _trend_text(s):
    """A `summarize` entry's trend: "flat", or the direction and the relative change
    ("rising +42%"); beyond ±`RELATIVE` (a first value near 0) the factor ("rising
    ×66667"); the direction alone where the sign changed or the first is 0 (a signed
    mean from 0.000115 to -0.00052 read "falling -552%": a share of a value that
    crosses zero says nothing)."""
    change, first, last = s["change"], s["first"], s["last"]
    if change is None or s["trend"] == "flat" or first == 0 or first * last < 0:
        return s["trend"]
    if abs(change) <= RELATIVE:
        return f"{s['trend']} {change:+.0%}"
    factor = last / first  # above 1 + RELATIVE: "×34", "×66667", "×1.2e+07"
    return f"{s['trend']} ×{round(factor) if factor < 1e6 else format(factor, '.2g')}"


def _rows(summary):
    rows = []
    for layer, metrics in summary.items():
        for i, (metric, s) in enumerate(metrics.items()):
            rows.append(
                [
                    layer if i == 0 else "",
                    metric,
                    _fmt(s["first"], s["first_flagged"]),
                    _fmt(s["last"], s["flagged"]),
                    _trend_text(s),
                    f"{s['first_step']}..{s['last_step']} ({s['updates']})",
                ]
            )
    return ["layer", "metric", "first", "last", "trend", "steps (updates)"], rows


def _flag_count(summary):
    """The values the table marks `!` (first or last)."""
    return sum(
        s["first_flagged"] + s["flagged"] for metrics in summary.values() for s in metrics.values()
    )


def render_text(summaries):
    lines = []
    for label, summary in summaries.items():
        header, rows = _rows(summary)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        flagged = _flag_count(summary)
        lines.append(f"Run {label}: {len(summary)} layer(s), {flagged} value(s) below marked !")
        for row in [header, *rows]:
            cells = [
                c.ljust(w) if i in (0, 1, 4, 5) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            ]
            lines.append("  ".join(cells).rstrip())
        lines.append("")
    lines.append(
        "! = beyond a threshold where its rule judges the layer (the run's thresholds, else "
        "keras_initkit.health.DEFAULT_THRESHOLDS); the headline metrics only, --all for every "
        "one; the findings: the report without --layers"
    )
    return "\n".join(lines)


def render_markdown(summaries):
    lines = []
    for label, summary in summaries.items():
        header, rows = _rows(summary)
        lines.append(f"### Run `{label}` ({_flag_count(summary)} value(s) below marked `!`)")
        lines.append("")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| --- | --- | ---: | ---: | --- | --- |")
        lines.extend("| " + " | ".join(row) + " |" for row in rows)
        lines.append("")
    lines.append(
        "`!` = beyond a threshold where its rule judges the layer (the run's thresholds, else "
        "`keras_initkit.health.DEFAULT_THRESHOLDS`); the headline metrics only, `--all` for "
        "every one; the findings: the report without `--layers`"
    )
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def render_json(runs, everything=False):
    thresholds, lower_thresholds = {}, {}
    for run in runs:
        thresholds.update(run.thresholds)
        lower_thresholds.update(run.lower_thresholds)
    return json.dumps(
        _json_safe(
            {
                "thresholds": thresholds,
                "lower_thresholds": lower_thresholds,
                "runs": {run.label: summarize(run, everything) for run in runs},
                "findings": {run.label: findings(run)[0] for run in runs},
            }
        ),
        indent=2,
    )


def report(log_dir, fmt="text", everything=False, layers=False, html=None):
    """The report of `log_dir` as a string; raises `UsageError` when there is none.

    Args:
        log_dir: the log directory (see `find_runs`).
        fmt: "text", "markdown" (the per-layer table) or "json" (everything).
        everything: every logged metric, not only the headline ones.
        layers: the per-layer table instead of the findings and worst layers (text).
        html: a path: also write the self-contained HTML dashboard there.
    """
    runs = read_runs(log_dir)
    if html:
        from keras_initkit.dashboard import html as html_report

        try:
            html_report.write(
                runs,
                html,
                title=f"keras_initkit: {log_dir}",
                findings={run.label: findings(run) for run in runs},
            )
        except OSError as error:  # a missing folder, a directory, no permission
            raise UsageError(
                "--html needs a file path it can write (its folder must exist). "
                f"Received: --html {html} ({error.strerror})"
            ) from error
    if fmt == "json":
        return render_json(runs, everything)
    if fmt == "markdown" or layers:
        summaries = {run.label: summarize(run, everything) for run in runs}
        return (render_markdown if fmt == "markdown" else render_text)(summaries)
    return render_summary(runs)


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-initkit",
        description="keras_initkit: read the training-health logs the monitors write "
        "(the demo is `tox -e demo` in the source repository).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    rep = commands.add_parser(
        "report",
        help="summarize the keras_initkit TensorBoard logs of a directory",
        description=(
            "Print, per run, the findings (rule, layers, the step it first fired, worst "
            "value, fix) and the worst layers of each metric; --layers: per layer and "
            "metric, the first and latest value and the trend ('!' = beyond a threshold). "
            "Reads LOGDIR/initkit, LOGDIR itself, or every 'initkit' run below LOGDIR, "
            "without TensorFlow."
        ),
    )
    rep.add_argument("logdir", metavar="LOGDIR", help="log directory given to the monitors")
    rep.add_argument(
        "--layers",
        action="store_true",
        help="print the per-layer table (first and latest value, trend) instead",
    )
    rep.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="output format (default: text; markdown is the per-layer table)",
    )
    rep.add_argument(
        "--all",
        action="store_true",
        dest="everything",
        help="every logged metric in the per-layer table, not only the headline ones "
        f"({', '.join(METRICS)})",
    )
    rep.add_argument(
        "--html",
        metavar="OUT.html",
        help="also write the dashboard (heatmaps, findings) as one self-contained HTML file",
    )
    return parser


def _show_warning(default, message, category, *args, **kwargs):
    """`warnings.showwarning` for the command: a corrupt event file as one line on stderr
    (the line of our code that warned says nothing to the user); others by `default`."""
    if issubclass(category, events.CorruptEventFileWarning):
        print(f"keras-initkit: warning: {message}", file=sys.stderr)
    else:
        default(message, category, *args, **kwargs)


def main(argv=None):
    """Entry point of `keras-initkit`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
        return _main(argv)


def _main(argv):
    try:
        if argv and argv[0] == "demo":
            raise UsageError(DEMO_MESSAGE)
        args = _parser().parse_args(argv)
        print(report(args.logdir, args.format, args.everything, args.layers, args.html))
        if args.html:
            print(f"wrote {args.html}")
        return 0
    except BrokenPipeError:  # `keras-initkit report ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as error:
        print(f"keras-initkit: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What the dashboard, the HTML report and `keras-initkit report` show, as plain data.

Built from a `keras_initkit.dashboard.events.Run` (read from files, or from
TensorBoard's data provider by the plugin) so the three views agree: the layers x steps
matrix of one metric, each metric's colour scale, and the findings grouped by rule and
fix with their layers as ranges in forward order.
"""

import dataclasses
import json
import math

import numpy as np

from keras_initkit.dashboard.events import parse_number
from keras_initkit.table import MAX_RUNS, capped_runs, consecutive_runs, spanned

# How each metric is coloured: "fraction" on [0, 1]; "log" on log10 of positive values;
# "signed" around 0; "linear" from 0 (or the smallest value) to the largest; "ratio" the
# same from 1 (a worst factor, never below 1).
SCALES = {
    "saturated_fraction": "fraction",
    "dead_fraction": "fraction",
    "inactive_fraction": "fraction",
    "gate_saturated_fraction": "fraction",
    "attention_entropy": "fraction",
    "saturated_low": "fraction",
    "saturated_high": "fraction",
    "firing_rate": "fraction",
    "bn_init_weight": "fraction",  # momentum^step, in [0, 1]
    "activation_mean": "signed",
    "activation_std": "log",
    "gradient_norm": "log",
    "update_ratio": "log",
    # Spans decades, and a vanished layer's can be exactly 0 (drawn at the low end).
    "gradient_ratio": "log",
    "weight_norm": "log",
    "bn_mean_shift": "linear",
    "bn_std_ratio": "ratio",  # exp(max |log r|) >= 1: linear from 1
    "recurrent_spectral_radius": "linear",
}
# The order metrics are offered in (others follow alphabetically).
PREFERRED = (
    "dead_fraction",
    "inactive_fraction",
    "saturated_fraction",
    "activation_std",
    "activation_mean",
    "gradient_norm",
    "update_ratio",
    "bn_mean_shift",
    "bn_std_ratio",
    "bn_init_weight",
    "gate_saturated_fraction",
    "recurrent_spectral_radius",
    "attention_entropy",
)


def metric_order(metrics):
    rank = {m: i for i, m in enumerate(PREFERRED)}
    return sorted(metrics, key=lambda m: (rank.get(m, len(rank)), m))


def scale(metric, values):
    """`{"kind", "domain": [lo, hi]}` of `metric`'s colour scale over finite `values`."""
    kind = SCALES.get(metric)
    finite = values[np.isfinite(values)] if values.size else values
    if kind == "fraction":
        return {"kind": "linear", "domain": [0.0, 1.0]}
    if finite.size == 0:
        return {"kind": "linear", "domain": [0.0, 1.0]}
    lo, hi = float(finite.min()), float(finite.max())
    positive = finite[finite > 0]
    if kind is None:
        if lo > 0 and hi / lo > 100:
            kind = "log"
        else:
            kind = "signed" if lo < 0 < hi else "linear"
    if kind == "log" and positive.size:
        return {"kind": "log", "domain": [float(positive.min()), float(positive.max())]}
    if kind == "signed":
        bound = max(abs(lo), abs(hi)) or 1.0
        return {"kind": "signed", "domain": [-bound, bound]}
    lo = min(lo, 1.0 if kind == "ratio" else 0.0)
    return {"kind": "linear", "domain": [lo, hi if hi > lo else lo + 1.0]}


def matrix(run, metric):
    """`(layers, steps, values)`: the layers logging `metric` in forward order, the
    union of their steps, and a `(layers, steps)` float64 masked array (masked where
    absent; a logged NaN or inf is a value)."""
    per_layer = run.series.get(metric, {})
    layers = [name for name in run.layers if name in per_layer]
    steps = run.steps(metric)
    values = np.full((len(layers), len(steps)), np.nan)
    logged = np.zeros(values.shape, bool)
    for row, name in enumerate(layers):
        layer_steps, layer_values = per_layer[name]
        columns = np.searchsorted(steps, layer_steps)
        values[row, columns] = layer_values
        logged[row, columns] = True
    return layers, steps, np.ma.masked_array(values, mask=~logged)


def _json_number(x):
    """`x` as JSON: a 5-digit number, or the strings "nan", "inf" and "-inf" (JSON has
    no number for them: a diverged layer's values are findings, not absent ones)."""
    if math.isfinite(x):
        return f"{x:.5g}"
    return '"nan"' if x != x else ('"inf"' if x > 0 else '"-inf"')


def _rows(layers, names):
    names = set(names)
    return [i for i, name in enumerate(layers) if name in names]


def heatmap(run, metric):
    """The JSON-ready heatmap of `metric` in `run` (values as 5-digit numbers, null absent)."""
    layers, steps, values = matrix(run, metric)
    return {
        "run": run.label,
        "metric": metric,
        "layers": layers,
        "steps": steps.tolist(),
        "values": values,  # encoded by `dumps`: null where absent
        "threshold": run.thresholds.get(metric),
        "lower": run.lower_thresholds.get(metric),
        # Rows the rule behind a threshold does not judge: coloured as unjudged.
        "exempt": {
            side: _rows(layers, by_metric.get(metric, ())) for side, by_metric in run.exempt.items()
        },
        # Per side and row, the step the row left the rule's exemption at (0: never
        # exempt): earlier cells on that side are coloured as unjudged.
        "exempt_until": {
            side: [by_metric.get(metric, {}).get(name, 0) for name in layers]
            for side, by_metric in run.exempt_until.items()
            if metric in by_metric
        },
        # Per row, the first step the rule judges (0: every step): earlier cells are
        # coloured as unjudged.
        "judged_from": [run.judged_from.get(metric, {}).get(name, 0) for name in layers],
        # The steps the rule judges at, where it judges at the ends of epochs only.
        "epoch_end_steps": (
            run.epoch_ends["steps"] if metric in run.epoch_ends.get("metrics", ()) else None
        ),
        "scale": scale(metric, values.filled(np.nan)),
    }


def dumps(data):
    """JSON text of a payload whose arrays (float64 numpy, masked where absent) become
    compact numbers (see `_json_number`)."""

    def encode(value):
        if isinstance(value, np.ma.MaskedArray):  # masked: null
            if value.ndim == 2:
                return "[" + ",".join(encode(row) for row in value) + "]"
            cells = zip(value.data.tolist(), np.ma.getmaskarray(value).tolist(), strict=True)
            return "[" + ",".join("null" if m else _json_number(v) for v, m in cells) + "]"
        if isinstance(value, np.ndarray):
            if value.ndim == 2:
                return "[" + ",".join(encode(row) for row in value) + "]"
            return "[" + ",".join(map(_json_number, value.tolist())) + "]"
        if isinstance(value, dict):
            return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(encode(v) for v in value) + "]"
        if isinstance(value, float):
            return _json_number(value)
        return json.dumps(value)

    return encode(data)


def ranges(names, layers):
    """`names` as ranges of consecutive layers in forward order: "a – c (3), e" (count >
    2 shown); more than `MAX_RUNS` runs end in "and N more" (a rule that fired on every
    batch-norm layer of ResNet50 named 53 layers, none next to another)."""
    runs, rest = capped_runs(names, layers, MAX_RUNS)
    parts = [
        ", ".join(run) if len(run) <= 2 else f"{run[0]} – {run[-1]} ({len(run)})" for run in runs
    ]
    return ", ".join(parts + ([f"and {rest} more"] if rest else []))


def _value(finding):
    return parse_number(finding.get("value"))


def group_findings(run):
    """The run's findings, one entry per (rule, fix): layers as ranges, first step, worst.

    The worst value is the largest value of the group, the smallest for a
    lower-is-worse rule: one whose findings that carry a `threshold` (the limit the
    value crossed, as the monitors record it for every rule with one, the depth rules'
    ratios included) all lie below it. It is taken over the recorded values (each
    layer's at its first finding) and the values of the rule's logged metric in the
    group's layers that its thresholds judge (a layer that got worse after its first
    finding). A non-finite value is the worst of all. Entries come in order of first
    step.
    """
    groups = {}
    for finding in run.findings:
        key = (str(finding.get("rule", "")), str(finding.get("fix", "") or ""))
        groups.setdefault(key, []).append(finding)
    flagged = run_flagger(run) if run.series else None
    out = []
    for (rule, fix), found in groups.items():
        pairs = [(v, f.get("layer")) for f in found if (v := _value(f)) is not None]
        pairs += _judged(run, found, flagged)
        worst, worst_layer = None, None
        if any(not math.isfinite(v) for v, _ in pairs):
            worst, worst_layer = next((v, n) for v, n in pairs if not math.isfinite(v))
        elif pairs:
            pick = min if _lower_is_worse(found) else max
            worst, worst_layer = pick(pairs, key=lambda pair: pair[0])
        if worst is not None and not math.isfinite(worst):
            worst = str(worst)  # "nan", "inf": JSON has no number for them
        steps = [int(f["step"]) for f in found if f.get("step") is not None]
        layer_names = [str(f.get("layer")) for f in found]
        order = _measured(run, found, layer_names)
        out.append(
            {
                "rule": rule,
                "layers": ranges(layer_names, order),
                # Every layer, in forward order (the table's tooltip), where `layers` is cut.
                "names": [n for part in consecutive_runs(layer_names, order) for n in part],
                "count": len(set(layer_names)),
                "first_step": min(steps) if steps else None,
                "worst": worst,
                "worst_layer": worst_layer,
                "fix": fix,
                "message": str(found[0].get("message", "")),
            }
        )
    out.sort(key=lambda g: (g["first_step"] is None, g["first_step"] or 0, g["rule"]))
    return out


def _judged(run, found, flagged):
    """`[(value, layer)]`: the finite logged values of the metric `found` (one rule's
    findings) records, in its layers, that `flagged` judges beyond a threshold."""
    metric = next((str(f["metric"]) for f in found if f.get("metric")), None)
    per_layer = run.series.get(metric, {}) if flagged is not None else {}
    out = []
    for layer in dict.fromkeys(str(f.get("layer")) for f in found):
        if layer not in per_layer:
            continue
        points = _flagged_points(flagged, metric, layer, *per_layer[layer])
        out.extend((value, layer) for _, value in points if math.isfinite(value))
    return out


def _flagged_points(flagged, metric, layer, steps, values):
    """`[(step, value)]` of one layer's logged `metric` that `flagged` judges a finding."""
    pairs = zip(np.asarray(steps).tolist(), np.asarray(values, float).tolist(), strict=True)
    return [(step, value) for step, value in pairs if flagged(metric, value, layer, step)]


def _lower_is_worse(found):
    """Whether `found` (one rule's findings) is of a lower-is-worse rule: its findings
    that carry a `threshold` (some writers record none) all have a value below it."""
    bounded = [
        (v, t)
        for f in found
        if (v := _value(f)) is not None and (t := parse_number(f.get("threshold"))) is not None
    ]
    return bool(bounded) and all(v < t for v, t in bounded)


def _measured(run, found, layer_names):
    """The run's layers in forward order that a range of `found` (one rule's findings)
    may span: those with a logged series of the rule's metric (the records' `metric`),
    and the findings' own; all of them when the metric is not logged. ResNet50's 53
    batch-norm layers read "bn … bn (53)", not "bn, bn, bn, bn, and 49 more", and
    ConvNeXt's GELU layers do not split a run of its convolutions, as in `diagnose`."""
    metric = next((str(f["metric"]) for f in found if f.get("metric")), None)
    logged = run.series.get(metric)
    return spanned(run.layers, logged, layer_names) if logged else run.layers


def flagger(
    thresholds, lower=None, exempt=None, judged_from=None, epoch_ends=None, exempt_until=None
):
    """`flagged(metric, value, layer=None, step=None)`: above the metric's threshold
    (`thresholds`), below its lower threshold (`lower`), or not finite. A threshold does
    not apply to the layers `exempt` lists for it (`{"above"|"below": {metric:
    [layer]}}`), nor to a layer's values logged before the step `exempt_until` gives for
    it (`{"above"|"below": {metric: {layer: step}}}`: it left the exemption then), nor
    to a layer's values logged before the step `judged_from` gives (`{metric: {layer:
    step}}`), nor, for the `epoch_ends` metrics, to values logged at other steps than
    its ends of epochs (`{"metrics": [...], "steps": [...]}`)."""
    lower, exempt, judged_from = lower or {}, exempt or {}, judged_from or {}
    at_ends = set((epoch_ends or {}).get("metrics", ()))
    ends = set((epoch_ends or {}).get("steps", ()))
    until = exempt_until or {}

    def judged(side, metric, layer, step):
        if layer in exempt.get(side, {}).get(metric, ()):
            return False
        return step is None or step >= until.get(side, {}).get(metric, {}).get(layer, 0)

    def flagged(metric, value, layer=None, step=None):
        if not math.isfinite(value):
            return True
        if step is not None and step < judged_from.get(metric, {}).get(layer, 0):
            return False
        if step is not None and metric in at_ends and step not in ends:
            return False
        high, low = thresholds.get(metric), lower.get(metric)
        if high is not None and value > high:
            return judged("above", metric, layer, step)
        if low is not None and value < low:
            return judged("below", metric, layer, step)
        return False

    return flagged


def run_flagger(run):
    """`flagger` with everything `run` recorded of where its thresholds apply."""
    return flagger(
        run.thresholds,
        run.lower_thresholds,
        run.exempt,
        run.judged_from,
        run.epoch_ends,
        run.exempt_until,
    )


def derived_findings(run, flagged):
    """Findings from the logged values: per flagged metric and layer, the first step
    and the worst value (for runs without a findings record). The rule is the metric's
    name; a layer whose flagged values all lie below the run's lower threshold of the
    metric gets the rule `"<metric> below <threshold>"`, its smallest value as the
    worst, and the threshold (as a recorded finding carries it)."""
    found = []
    for metric, per_layer in run.series.items():
        low = run.lower_thresholds.get(metric)
        for layer, (steps, values) in per_layer.items():
            hits = _flagged_points(flagged, metric, layer, steps, values)
            if not hits:
                continue
            flagged_values = [v for _, v in hits]
            finding = {"rule": metric, "layer": layer, "step": int(hits[0][0])}
            if low is not None and all(v < low for v in flagged_values):
                finding.update(rule=f"{metric} below {low:.4g}", value=min(flagged_values))
                finding["threshold"] = low
            else:
                finding["value"] = max(flagged_values, key=lambda v: (not math.isfinite(v), v))
            found.append(finding)
    return found


def findings(run, flagged=None):
    """`(groups, source)`: the run's grouped findings and where they come from.

    `source` is "recorded" (the run's `initkit/findings` record), "derived" (no record:
    from the values and `flagged`, by default the run's recorded thresholds) or "none"
    (neither a record nor thresholds).
    """
    if run.findings or run.has_findings:
        return group_findings(run), "recorded"
    if flagged is None and run.has_thresholds:
        flagged = run_flagger(run)
    if flagged is None:
        return [], "none"
    derived = dataclasses.replace(run, findings=derived_findings(run, flagged))
    return group_findings(derived), "derived"


def finding_metrics(records, metrics):
    """The logged `metrics` that findings `records` are about (their `metric`, or the
    `shown_in` of a rule whose value is not one logged, as the depth rules' ratio),
    earliest finding first: the dashboard opens on the first (the first metric
    otherwise)."""

    def shown(record):
        return record.get("metric") or record.get("shown_in")

    found = sorted(
        (r for r in records or () if shown(r) in metrics),
        key=lambda r: (r.get("step") is None, r.get("step") or 0),
    )
    return list(dict.fromkeys(str(shown(r)) for r in found))


def run_summary(run):
    """One run's entry of the dashboard's run list."""
    metrics = metric_order(run.metrics)
    return {
        "run": run.label,
        "metrics": metrics,
        "finding_metrics": finding_metrics(run.findings, metrics),
        "layers": len(run.layers),
        "steps": int(max((run.steps(m).size for m in metrics), default=0)),
        "findings": len(run.findings),
        "has_meta": run.has_meta,
    }

"""The one-call health check: `diagnose(model, x, y)` -> `HealthReport`.

One probe pass (activation moments, saturation, dead units, batch-norm mismatch), one
gradient pass when targets and a loss are available, and a look at the weights
(symmetry). Every finding names the layer, the number and a fix.

The thresholds live here, once (`DEFAULT_THRESHOLDS`); `keras-initkit report` flags
logged values with the same rules (`flagged`).
"""

import dataclasses
import math

import keras
import numpy as np

from keras_initkit.probe import (
    ActivationMoments,
    BatchNormStatistics,
    DeadUnits,
    Probe,
    Saturation,
    as_batches,
)
from keras_initkit.probe.gradients import GradientProbe, check_inputs

# What counts as a finding. Per-value rules flag a value above the threshold; the
# two depth rules flag a ratio below 1/threshold or above threshold.
DEFAULT_THRESHOLDS = {
    # share of a bounded activation's values within 1% of its range of an asymptote
    "saturated_fraction": 0.2,
    # share of rectifier units never positive on the data (leaky: `inactive_fraction`)
    "dead_fraction": 0.5,
    # share of a hidden layer's units whose incoming weights and bias equal another's
    "symmetric_fraction": 0.0,
    # mean over channels of |moving mean − input mean| / input std
    "bn_mean_shift": 0.5,
    # worst factor by which a channel's moving std is off
    "bn_std_ratio": 2.0,
    # learning rate × ‖g‖ / ‖w‖: the relative size of one plain SGD step
    "update_ratio": 1.0,
    # output std of a hidden layer / output std of the first one
    "activation_std_ratio": 100.0,
    # gradient norm of the first kernel layer / that of the last one
    "gradient_ratio": 1000.0,
}
_PER_VALUE = {
    "saturated_fraction": "saturated_fraction",
    "dead_fraction": "dead_fraction",
    "inactive_fraction": "dead_fraction",
    "symmetric_fraction": "symmetric_fraction",
    "bn_mean_shift": "bn_mean_shift",
    "bn_std_ratio": "bn_std_ratio",
    "update_ratio": "update_ratio",
}


def check_thresholds(thresholds):
    """`DEFAULT_THRESHOLDS` updated with `thresholds` (a dict), validated."""
    merged = dict(DEFAULT_THRESHOLDS)
    if thresholds is None:
        return merged
    if not isinstance(thresholds, dict):
        raise ValueError(
            "Argument `thresholds` must be a dict `{rule: value}` or None. "
            f"Received: thresholds={thresholds!r}"
        )
    for key, value in thresholds.items():
        if key not in DEFAULT_THRESHOLDS:
            raise ValueError(
                f"Argument `thresholds` has an unknown rule (known: "
                f"{sorted(DEFAULT_THRESHOLDS)}). Received: {key!r}"
            )
        low = 1.0 if key in ("bn_std_ratio", "activation_std_ratio", "gradient_ratio") else 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise ValueError(
                f"Threshold `{key}` must be a number >= {low:g}. Received: {key}={value!r}"
            )
        merged[key] = float(value)
    return merged


def flagged(metric, value, thresholds=None):
    """True when one logged or measured `metric` value is a finding.

    Covers the per-value rules (`saturated_fraction`, `dead_fraction`,
    `inactive_fraction`, `symmetric_fraction`, `bn_mean_shift`, `bn_std_ratio`,
    `update_ratio`) and a non-finite `gradient_norm`; other metrics are never flagged.
    """
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    if metric == "gradient_norm":
        return not math.isfinite(value)
    rule = _PER_VALUE.get(metric)
    return rule is not None and not value <= thresholds[rule]


def depth_ratio(values):
    """`(index, ratio)` of the most extreme `values[i] / values[0]`, i ≥ 1, or None.

    The ratio farthest from 1 on a log scale; used for the output std through depth.
    """
    values = [float(v) for v in values]
    if len(values) < 2 or not values[0] > 0:
        return None
    ratios = [v / values[0] for v in values[1:]]

    def distance(r):
        return abs(math.log(r)) if r > 0 else math.inf

    i = max(range(len(ratios)), key=lambda k: distance(ratios[k]))
    return i + 1, ratios[i]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem `diagnose` found.

    Attributes:
        layer: the layer's display name.
        kind: `"saturated"`, `"dead"`, `"inactive"`, `"symmetric"`, `"bn_mismatch"`,
            `"vanishing_activations"`, `"exploding_activations"`,
            `"vanishing_gradients"`, `"exploding_gradients"` or `"large_update"`.
        value: the number that crossed the threshold.
        message: a sentence naming the layer, the number and a fix.
    """

    layer: str
    kind: str
    value: float
    message: str


def _pct(v):
    return f"{v:.0%}"


def _num(v):
    return f"{v:.3g}"


# Table columns: (header, metric, formatter).
COLUMNS = (
    ("activation", "activation", str),
    ("mean", "activation_mean", _num),
    ("std", "activation_std", _num),
    ("saturated", "saturated_fraction", _pct),
    ("dead", "dead_fraction", _pct),
    ("inactive", "inactive_fraction", _pct),
    ("symmetric", "symmetric_fraction", _pct),
    ("bn_shift", "bn_mean_shift", _num),
    ("bn_ratio", "bn_std_ratio", _num),
    ("grad_norm", "gradient_norm", _num),
    ("update", "update_ratio", _num),
)


class HealthReport:
    """What `diagnose` measured, and what it found wrong.

    `str(report)` is a table (one row per layer, flagged values marked `!`) followed by
    the findings, each naming the layer, the number and a fix.

    Attributes:
        metrics: `layer -> {metric: value}` in forward order: `activation` (name),
            `activation_mean`, `activation_std`, `saturated_fraction`,
            `dead_fraction` or `inactive_fraction`, `symmetric_fraction` and
            `symmetric_units`, `bn_mean_shift`, `bn_std_ratio`, `gradient_norm`,
            `weight_norm`, `update_ratio`; a metric that does not apply is absent.
        findings: the `Finding`s, in forward order of their layers.
        gradient_ratio: gradient norm of the first kernel layer over the last one's,
            or `None` when gradients were not measured.
        loss: the mean loss on the data, or `None` without gradients.
        source: which data was used.
        thresholds: the thresholds that were applied.
    """

    def __init__(self, metrics, findings, gradient_ratio, loss, source, thresholds):
        self.metrics = metrics
        self.findings = list(findings)
        self.gradient_ratio = gradient_ratio
        self.loss = loss
        self.source = source
        self.thresholds = dict(thresholds)

    @property
    def ok(self):
        """True when there is no finding."""
        return not self.findings

    def to_dict(self):
        """The report as plain, JSON-serializable Python data."""

        def plain(v):
            return v if isinstance(v, str) else float(v)

        return {
            "ok": self.ok,
            "source": self.source,
            "loss": self.loss,
            "gradient_ratio": self.gradient_ratio,
            "thresholds": dict(self.thresholds),
            "layers": {
                name: {k: plain(v) for k, v in values.items()}
                for name, values in self.metrics.items()
            },
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }

    def _rows(self):
        columns = [c for c in COLUMNS if any(c[1] in v for v in self.metrics.values())]
        header = ["layer"] + [c[0] for c in columns]
        rows = []
        for name, values in self.metrics.items():
            row = [name]
            for _, metric, fmt in columns:
                if metric not in values:
                    row.append("-")
                    continue
                value = values[metric]
                text = fmt(value)
                if metric != "activation" and flagged(metric, value, self.thresholds):
                    text += "!"
                row.append(text)
            rows.append(row)
        return header, rows

    def _summary_lines(self):
        lines = []
        if self.gradient_ratio is not None:
            lines.append(
                f"Gradient norm ratio first/last layer: {self.gradient_ratio:.3g}; "
                f"loss {self.loss:.4g}."
            )
        else:
            lines.append("Gradients not measured (pass `y` and compile the model or pass `loss=`).")
        return lines

    def __str__(self):
        header, rows = self._rows()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [f"HealthReport on {self.source}"]
        fmt = [f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths)]
        for row in [header, *rows]:
            lines.append("  ".join(f.format(c) for f, c in zip(fmt, row)).rstrip())
        lines.extend(self._summary_lines())
        if self.ok:
            lines.append("No findings: the network looks healthy at initialization.")
        else:
            lines.append(f"{len(self.findings)} finding(s):")
            lines.extend(f"- {f.message}" for f in self.findings)
        return "\n".join(lines)

    def to_markdown(self):
        """The report as a Markdown table and a list of findings."""
        header, rows = self._rows()
        lines = [f"**Health report** on {self.source}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
        for row in rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines.append("")
        lines.extend(self._summary_lines())
        lines.append("")
        if self.ok:
            lines.append("No findings.")
        else:
            lines.extend(f"- **{f.kind}** — {f.message}" for f in self.findings)
        return "\n".join(lines)

    def __repr__(self):
        return f"<HealthReport layers={len(self.metrics)} findings={len(self.findings)}>"


# -- symmetry: identical units, from the weights --------------------------------------


def _unit_matrix(layer):
    """The kernel as `(units, fan_in)` rows (plus the bias), or None if not judged."""
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return None  # each unit has its own input channel: no shared inputs
    transpose = (
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        keras.layers.Conv3DTranspose,
    )
    kernel = getattr(layer, "pointwise_kernel", None)
    if kernel is None:
        kernel = getattr(layer, "kernel", None)
    if not isinstance(kernel, keras.Variable) or len(kernel.shape) < 2:
        return None
    k = keras.ops.convert_to_numpy(kernel)
    axis = -2 if isinstance(layer, transpose) else -1
    rows = np.moveaxis(k, axis, -1).reshape(-1, k.shape[axis]).T
    bias = getattr(layer, "bias", None)
    if isinstance(bias, keras.Variable) and tuple(bias.shape) == (rows.shape[0],):
        rows = np.concatenate([rows, keras.ops.convert_to_numpy(bias)[:, None]], axis=1)
    return rows


def symmetric_units(layer):
    """Number of units whose incoming weights and bias equal another unit's, and units."""
    rows = _unit_matrix(layer)
    if rows is None or rows.shape[0] < 2:
        return None
    _, counts = np.unique(rows, axis=0, return_counts=True)
    return int(counts[counts > 1].sum()), rows.shape[0]


# -- diagnose ---------------------------------------------------------------------


def _data(x, y):
    if y is None:
        return x
    if not isinstance(x, (np.ndarray, list, dict)) and not keras.ops.is_tensor(x):
        raise ValueError(
            "Argument `y` can only be given with array inputs; a dataset yields its own "
            f"targets. Received: x of type {type(x).__name__} and y"
        )
    return (x, y)


def _build(model, batches):
    if not model.built:
        x = keras.tree.map_structure(lambda a: a[:2], batches[0][0])
        model(x, training=False)


def _has_loss(model, loss):
    return (
        loss is not None
        or getattr(model, "_compile_loss", None) is not None
        or type(model).compute_loss is not keras.Model.compute_loss
    )


def _findings(metrics, order, kernel_names, gradient, thresholds):
    found = []
    t = thresholds
    for name in order:
        values = metrics[name]
        act = values.get("activation", "activation")
        v = values.get("saturated_fraction")
        if v is not None and flagged("saturated_fraction", v, t):
            found.append(
                Finding(
                    name,
                    "saturated",
                    v,
                    f"{name}: {v:.0%} of {act} outputs saturated — weights too large for a "
                    "bounded activation; use Glorot initialization or lsuv_init.",
                )
            )
        for kind in ("dead", "inactive"):
            v = values.get(f"{kind}_fraction")
            if v is not None and flagged(f"{kind}_fraction", v, t):
                found.append(
                    Finding(
                        name,
                        kind,
                        v,
                        f"{name}: {v:.0%} of units {kind} (never positive on the data) — use "
                        "He initialization or lsuv_init, and check the bias initialization.",
                    )
                )
        v = values.get("symmetric_fraction")
        if v is not None and flagged("symmetric_fraction", v, t):
            n = int(values["symmetric_units"])
            found.append(
                Finding(
                    name,
                    "symmetric",
                    v,
                    f"{name}: {n} of {int(values['units'])} units have the same incoming "
                    "weights and bias as another unit — they compute the same function and get "
                    "the same updates unless the next layer tells them apart; use a random "
                    "initializer (he_normal, glorot_uniform).",
                )
            )
        shift, ratio = values.get("bn_mean_shift"), values.get("bn_std_ratio")
        if shift is not None and (
            flagged("bn_mean_shift", shift, t) or flagged("bn_std_ratio", ratio, t)
        ):
            worst = shift if flagged("bn_mean_shift", shift, t) else ratio
            found.append(
                Finding(
                    name,
                    "bn_mismatch",
                    worst,
                    f"{name}: moving statistics do not match the input (bn_mean_shift "
                    f"{shift:.2f}, bn_std_ratio {ratio:.2f}) — inference normalizes "
                    "differently from training; run recalibrate_batchnorm(model, data) "
                    "before evaluating, or normalize the inputs.",
                )
            )
        v = values.get("update_ratio")
        if v is not None and flagged("update_ratio", v, t):
            found.append(
                Finding(
                    name,
                    "large_update",
                    v,
                    f"{name}: update_ratio {v:.3g} — one SGD step would change the weights by "
                    f"{v:.0%} of their norm; lower the learning rate or clip gradients.",
                )
            )
    # Output std through depth: the hidden kernel layers (not the output layer).
    hidden = [n for n in kernel_names[:-1] if "activation_std" in metrics.get(n, {})]
    extreme = depth_ratio([metrics[n]["activation_std"] for n in hidden])
    limit = t["activation_std_ratio"]
    if extreme is not None and not 1 / limit <= extreme[1] <= limit:
        i, r = extreme
        name, first = hidden[i], hidden[0]
        kind = "vanishing_activations" if r < 1 else "exploding_activations"
        verb = "vanish" if r < 1 else "explode"
        found.append(
            Finding(
                name,
                kind,
                r,
                f"{name}: output std {metrics[name]['activation_std']:.3g} is {r:.1e} × "
                f"that of {first} — activations {verb} through depth; use He (ReLU) or "
                "Glorot (tanh, sigmoid) initialization, or lsuv_init.",
            )
        )
    if gradient is not None:
        ratio, first, last = gradient
        limit = t["gradient_ratio"]
        if not math.isfinite(ratio) or ratio > limit:
            found.append(
                Finding(
                    first,
                    "exploding_gradients",
                    ratio,
                    f"{first}: gradient norm is {ratio:.1e} × that of {last} — exploding "
                    "gradients; use a scaled initialization (He, Glorot) or lsuv_init, "
                    "lower the learning rate, clip gradients.",
                )
            )
        elif ratio < 1 / limit:
            found.append(
                Finding(
                    first,
                    "vanishing_gradients",
                    ratio,
                    f"{first}: gradient norm is {ratio:.1e} × that of {last} — vanishing "
                    "gradients; use ReLU with He initialization, lsuv_init, batch "
                    "normalization or residual connections.",
                )
            )
    rank = {n: i for i, n in enumerate(order)}
    found.sort(key=lambda f: rank.get(f.layer, len(rank)))
    return found


def diagnose(
    model,
    x,
    y=None,
    *,
    loss=None,
    layers=None,
    batch_size=None,
    max_batches=None,
    thresholds=None,
):
    """Check a network's health at initialization (or at any point) in one call.

    Runs the model once on `x` with `training=False` semantics and measures, per layer:
    output mean and std, saturated fraction (bounded activations), dead or inactive
    fraction (rectifiers), batch-norm mismatch between moving statistics and the
    actual input, and symmetry (units with identical incoming weights and bias, from
    the weights: Goodfellow et al.'s symmetry point). When targets are given (`y`, or a
    dataset yielding `(x, y)`) and the model has a loss (compiled, or `loss=`), one
    gradient pass adds each layer's gradient norm and the ratio between the first and
    the last kernel layer's. Nothing is trained and no variable changes.

    A finding is reported when (defaults, `DEFAULT_THRESHOLDS`, overridable with
    `thresholds={rule: value}`):

    - `saturated_fraction` > 0.2 (share of values within 1% of an asymptote);
    - `dead_fraction` or `inactive_fraction` > 0.5 (units never positive);
    - `symmetric_fraction` > 0 in a hidden kernel layer (every kernel layer but the
      last in forward order);
    - `bn_mean_shift` > 0.5 or `bn_std_ratio` > 2.0;
    - `update_ratio` > 1.0 (learning rate × ‖g‖ / ‖w‖, with a compiled optimizer);
    - a hidden kernel layer's output std is more than 100 × above or below the first
      hidden kernel layer's (`activation_std_ratio`);
    - the first kernel layer's gradient norm is more than 1000 × above or below the
      last one's (`gradient_ratio`), or not finite.

    Args:
        model: a Keras model; built from `x` when it is not built yet.
        x: input data: an array or tensor (a list/dict of them for multi-input
            models), or a `tf.data.Dataset` / `keras.utils.PyDataset` (yielding `x` or
            `(x, y)`). A few hundred samples are plenty.
        y: targets for array `x`; enables the gradient check. Defaults to `None`.
        loss: the loss for the gradient check; `None` uses the compiled loss. Defaults
            to `None`.
        layers: layer names or objects to report; `None` for every layer the checks
            apply to. Defaults to `None`.
        batch_size: run array data in chunks of this many samples. Defaults to `None`
            (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.
        thresholds: `{rule: value}` overriding `DEFAULT_THRESHOLDS`. Defaults to
            `None`.

    Returns:
        A `HealthReport`: print it for a table and the findings; `report.ok` is True
        when nothing was found.

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    report = keras_initkit.diagnose(model, x_train[:512], y_train[:512])
    print(report)
    if not report.ok:
        keras_initkit.lsuv_init(model, x_train[:512])
    ```

    Reference:

    - [Glorot & Bengio, 2010](https://proceedings.mlr.press/v9/glorot10a.html)
    - [He et al., 2015](https://arxiv.org/abs/1502.01852)
    - [Goodfellow, Bengio & Courville, 2016, §8.4](https://www.deeplearningbook.org/contents/optimization.html)
    - [Wu & Johnson, 2021](https://arxiv.org/abs/2105.07576)
    """
    t = check_thresholds(thresholds)
    batches, source = as_batches(
        _data(x, y), batch_size=batch_size, max_batches=max_batches, argument="x"
    )
    targets = all(b[1] is not None for b in batches)
    if targets and not _has_loss(model, loss):
        raise ValueError(
            "The gradient check needs a loss: compile the model with a `loss` or pass "
            f"`loss=`. Received: targets and loss=None for an uncompiled model '{model.name}'"
        )
    if loss is not None and not targets:
        raise ValueError(
            "Argument `loss` needs targets: pass `y` or a dataset yielding `(x, y)`. "
            "Received: loss and no targets"
        )
    _build(model, batches)
    check_inputs(model, batches, argument="x")

    probe = Probe(
        model,
        [ActivationMoments(), Saturation(), DeadUnits(), BatchNormStatistics()],
        layers=layers,
    )
    result = probe.run_batches(batches, source)
    metrics, kernel_names = {}, []
    for site in result.sites:
        if site.name not in result.metrics:
            continue
        values = {} if site.activation is None else {"activation": site.activation}
        values.update(
            {
                k: v
                for k, v in result.metrics[site.name].items()
                if np.ndim(v) == 0
                and k not in ("saturated_low", "saturated_high", "abs_p98", "firing_rate")
            }
        )
        if site.has_kernel:
            kernel_names.append(site.name)
        metrics[site.name] = values
    for name in kernel_names[:-1]:
        counted = symmetric_units(next(s.layer for s in result.sites if s.name == name))
        if counted is not None:
            metrics[name]["symmetric_units"] = counted[0]
            metrics[name]["units"] = counted[1]
            metrics[name]["symmetric_fraction"] = counted[0] / counted[1]

    gradient, grad_loss, gradient_ratio = None, None, None
    if targets:
        grads = GradientProbe(model, loss=loss, layers=layers).run_batches(
            batches, source, argument="x"
        )
        grad_loss = grads.loss
        for name, values in grads.metrics.items():
            metrics.setdefault(name, {}).update(values)
        with_grad = [n for n in kernel_names if n in grads.metrics]
        if len(with_grad) >= 2:
            g_first = grads.metrics[with_grad[0]]["gradient_norm"]
            g_last = grads.metrics[with_grad[-1]]["gradient_norm"]
            if g_last > 0:
                gradient_ratio = g_first / g_last
            elif g_first > 0 or not math.isfinite(g_first):
                gradient_ratio = math.inf
            if gradient_ratio is not None:
                gradient = (gradient_ratio, with_grad[0], with_grad[-1])
    order = list(metrics)
    findings = _findings(metrics, order, kernel_names, gradient, t)
    return HealthReport(metrics, findings, gradient_ratio, grad_loss, source, t)

"""The one-call health check: `diagnose(model, x, y)` -> `HealthReport`.

One probe pass with every check of the rule book (`keras_initkit.checks`), one
gradient pass when targets and a loss are available, and a look at the weights
(symmetry). Every finding names the layer, the number and a fix.

The rules, their thresholds and texts live in `keras_initkit.checks`; the names below
are re-exported from there for `keras-initkit report` and older imports.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_initkit import _keras_private, validation
from keras_initkit.checks import (
    DEFAULT_THRESHOLDS,
    RULES,
    Finding,
    assign,
    check_thresholds,
    default_checks,
    depth_ratio,
    flagged,
    judge,
    measure,
    message,
    reducers,
    symmetric_units,
)
from keras_initkit.checks.gradients import branch_scale
from keras_initkit.checks.summary import blocks
from keras_initkit.probe import Probe, as_batches, build_on, cached, check_inputs
from keras_initkit.probe.gradients import GradientProbe
from keras_initkit.probe.selection import interleave
from keras_initkit.table import render

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Finding",
    "HealthReport",
    "check_thresholds",
    "depth_ratio",
    "diagnose",
    "flagged",
    "symmetric_units",
]


# Table columns: header -> metric. Fractions print as percentages, other numbers with
# three significant digits.
COLUMNS = {
    "activation": "activation", "mean": "activation_mean", "std": "activation_std",
    "saturated": "saturated_fraction", "dead": "dead_fraction", "inactive": "inactive_fraction",
    "symmetric": "symmetric_fraction", "bn_shift": "bn_mean_shift", "bn_ratio": "bn_std_ratio",
    "gates": "gate_saturated_fraction", "radius": "recurrent_spectral_radius",
    "attn_entropy": "attention_entropy",
    "grad_norm": "gradient_norm", "grad_ratio": "gradient_ratio", "update": "update_ratio",
}  # fmt: skip


def _cell(metric, value, thresholds, found):
    """A table cell; `!` when the value is one of its layer's `found` rules' findings."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    text = f"{value:.0%}" if metric.endswith("_fraction") else f"{value:.3g}"
    if not math.isfinite(value):  # NaN or inf: the layer diverged
        return text.replace("nan%", "nan") + "!"
    return text + ("!" if flagged(metric, value, thresholds, rules=found) else "")


@dataclasses.dataclass(frozen=True, repr=False)
class HealthReport:
    """What `diagnose` measured, and what it found wrong.

    `str(report)` reads like a diagnosis: first one line per rule that fired (its
    layers as ranges in forward order, the worst value, the fix) and notes, then the
    per-layer table (flagged values marked `!`). Each layer's own findings are in
    `findings`.

    Attributes:
        metrics: `layer -> {metric: value}` in forward order: `activation` (name) and
            every metric the checks report (`activation_mean`, `activation_std`,
            `saturated_fraction`, `dead_fraction` or `inactive_fraction`,
            `symmetric_fraction`, `bn_mean_shift`, `bn_std_ratio`, `gradient_norm`,
            `weight_norm`, `update_ratio`, `gradient_ratio`, ...); a metric that does
            not apply is absent.
        findings: the `keras_initkit.checks.Finding`s, in forward order of their layers.
        gradient_ratio: gradient norm of the first kernel layer over the last one's,
            or `None` when gradients were not measured. The first kernel layer is the
            first one the vanishing-gradient rule judges: attention's query and key
            projections are skipped (see `docs/health.md`).
        loss: the mean loss on the data as a training step computes it (batch norm
            with each batch's statistics, dropout off; `model.evaluate` normalizes
            with the moving statistics), or `None` without gradients.
        source: which data was used.
        thresholds: the thresholds that were applied.
        notes: information that is not a finding (e.g. batch-norm layers whose moving
            statistics are still at their initial values).
        optimizer_steps: how many steps the model's optimizer had taken (0: at
            initialization, or without an optimizer).
    """

    metrics: dict
    findings: list
    gradient_ratio: float | None
    loss: float | None
    source: str
    thresholds: dict
    notes: tuple = ()
    optimizer_steps: int = 0

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
            "optimizer_steps": self.optimizer_steps,
            "thresholds": dict(self.thresholds),
            "layers": {
                name: {k: plain(v) for k, v in values.items()}
                for name, values in self.metrics.items()
            },
            "findings": [f.to_dict() for f in self.findings],
        }

    def _table(self, markdown, title):
        columns = {h: m for h, m in COLUMNS.items() if any(m in v for v in self.metrics.values())}
        found = {}
        for f in self.findings:
            found.setdefault(f.layer, set()).add(f.rule)
        rows = [
            [name]
            + [
                _cell(m, values.get(m), self.thresholds, found.get(name, set()))
                for m in columns.values()
            ]
            for name, values in self.metrics.items()
        ]
        return render(["layer", *columns], rows, markdown=markdown, title=title)

    def _summary(self):
        if self.loss is None:
            return "Gradients not measured (pass `y` and compile the model or pass `loss=`)."
        if self.gradient_ratio is None:
            why = (
                "fewer than two kernel layers measured, or the last one's gradient norm is 0 "
                "or not finite"
                if math.isfinite(self.loss)
                else "the loss is not finite: the network diverged, or the data or targets hold NaN"
            )
            return f"Loss {self.loss:.4g}; gradient ratio undefined ({why})."
        return (
            f"Gradient norm ratio first/last layer: {self.gradient_ratio:.3g}; "
            f"loss {self.loss:.4g}."
        )

    def blocks(self):
        """The findings taken together: one `checks.summary.Block` per rule."""
        fixes = {name: rule.fix_at_init or rule.fix for name, rule in RULES.items()}
        # A finding's own fix where its check gave one (the scale-through-depth rules
        # made by the first layer alone: normalize the inputs, not the initialization).
        fixes.update((f.rule, f.fix) for f in self.findings if f.fix)
        below = {name for name, rule in RULES.items() if rule.below}
        return blocks(self.findings, fixes, below)

    def __str__(self):
        order = list(self.metrics)
        if self.ok:
            when = (
                "at initialization"
                if not self.optimizer_steps
                else f"after {self.optimizer_steps} training steps"
            )
            lines = [
                f"HealthReport on {self.source}. No findings: the network looks healthy {when}."
            ]
        else:
            layers = len({f.layer for f in self.findings})
            lines = [f"HealthReport on {self.source}: {len(self.findings)} finding(s) in "]
            lines[0] += f"{layers} layer(s):"
            lines.extend(f"- {block.text(order, scalars=self.metrics)}" for block in self.blocks())
        lines.extend(f"Note: {note}" for note in self.notes)
        lines.append(self._summary())
        lines.append(self._table(False, None))
        return "\n".join(lines)

    def to_markdown(self):
        """The report as a Markdown table and a list of findings."""
        lines = [self._table(True, f"**Health report** on {self.source}"), "", self._summary()]
        lines.extend(f"\n*Note:* {note}" for note in self.notes)
        lines.append("")
        if self.ok:
            lines.append("No findings.")
        else:
            lines.extend(f"- **{f.kind}** — {f.message}" for f in self.findings)
        return "\n".join(lines)

    def __repr__(self):
        return f"<HealthReport layers={len(self.metrics)} findings={len(self.findings)}>"


def _batches(model, x, y, loss, batch_size, max_batches):
    """Validated `(batches, source, targets)`; raises when a loss or targets are missing."""
    data = x
    if y is not None:
        if not isinstance(x, (np.ndarray, list, dict)) and not keras.ops.is_tensor(x):
            raise ValueError(
                "Argument `y` can only be given with array inputs; a dataset yields its own "
                f"targets. Received: x of type {type(x).__name__} and y"
            )
        data = (x, y)
    batches, source = as_batches(data, batch_size=batch_size, max_batches=max_batches, argument="x")
    targets = all(b[1] is not None for b in batches)
    if targets and not _keras_private.has_loss(model, loss):
        raise ValueError(
            "The gradient check needs a loss: compile the model with a `loss` or pass "
            f"`loss=`. Received: targets and loss=None for an uncompiled model '{model.name}'"
        )
    if loss is not None and not targets:
        raise ValueError(
            "Argument `loss` needs targets: pass `y` or a dataset yielding `(x, y)`. "
            "Received: loss and no targets"
        )
    build_on(model, batches[0][0], argument="x")
    check_inputs(model, batches, argument="x")
    return batches, source, targets


def _run(model, checks, batches, source, layers, targets, loss):
    """The probe pass (with targets, the gradient pass that also measures the forward
    statistics): `(assignment, sites, scalars, gradient result or None)`: the forward
    sites and the gradient ones measured, each layer once, in the model's layer order
    (a LayerNorm, measured for its gradient only, beside its neighbours, not after the
    head)."""
    probe = cached(Probe, model, reducers(checks), layers=layers)
    gradients, gradient_sites = None, []
    if targets:  # one pass: the forward statistics come from the gradient pass
        fused = cached(GradientProbe, model, loss=loss, layers=layers, forward=probe)
        gradients = fused.run_batches(batches, source, argument="x")
        gradient_sites, result = fused.sites, gradients.forward
    else:
        result = probe.run_batches(batches, source)
    sites = [s for s in result.sites if s.name in result.metrics]
    assignment = assign(checks, sites, gradient_sites)
    scalars = measure(assignment, result, gradients)
    named = {s.name for s in sites}
    extra = [s for s in gradient_sites if s.name not in named and s.name in scalars]
    called = [s.name for s in gradient_sites]  # in the order of first calls
    return assignment, interleave(model, sites, extra, called), scalars, gradients


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

    Runs the model once on `x` as training sees it (batch norm with the batch's
    statistics, dropout off, state updates discarded) and applies every check
    of the rule book (`keras_initkit.checks`) to every layer: output mean and std and
    their scale through depth, saturated fraction (bounded activations), dead or
    inactive fraction (rectifiers), batch-norm mismatch between moving statistics and
    the actual input, and symmetry (units with identical incoming weights and bias,
    from the weights). When targets are given (`y`, or a dataset yielding `(x, y)`) and
    the model has a loss (compiled, or `loss=`), one gradient pass adds each layer's
    gradient norm, update ratio (under SGD) and gradient ratio to the last kernel layer,
    judged by the vanishing and exploding gradient rules. Nothing is trained and no variable
    changes.

    The rules, their exact definitions and default thresholds (`DEFAULT_THRESHOLDS`,
    overridable with `thresholds={rule: value}`) are listed in docs/health.md
    ("What counts as a finding") and in `keras_initkit.checks.RULES`.

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
    - [Zhang et al., 2021](https://arxiv.org/abs/2102.06878), AutoTrainer (the
      first-to-last gradient-norm ratio)
    """
    validation.model(model)
    t = check_thresholds(thresholds)
    batches, source, targets = _batches(model, x, y, loss, batch_size, max_batches)
    assignment, sites, scalars, gradients = _run(
        model, default_checks(t), batches, source, layers, targets, loss
    )
    metrics = {}
    for site in sites:
        metrics[site.name] = {} if site.activation is None else {"activation": site.activation}
    for name, values in scalars.items():
        metrics.setdefault(name, {}).update(values)
    rank = {name: i for i, name in enumerate(metrics)}
    findings = sorted(
        (
            Finding(
                site.name,
                rule.name,
                value,
                None,
                message(site.name, text, rule.fix_at_init or rule.fix),
                text,
                rule.fix_at_init or rule.fix,
            )
            for _, site, rule, value, text in judge(assignment, scalars)
        ),
        key=lambda f: rank.get(f.layer, len(rank)),
    )
    # The first kernel layer the vanishing rule judges (not a query or key projection,
    # whose gradients are expected to be tiny while attention is near uniform, nor a
    # layer behind a zero residual-branch scale), its ratio as measured.
    by_name = {site.name: site for site in sites}
    gradient_ratio = next(
        (
            v["gradient_ratio"]
            for name, v in metrics.items()
            if RULES["vanishing"].measure(by_name.get(name), v) is not None
        ),
        None,
    )
    loss_value = None if gradients is None else gradients.loss
    notes = _notes(sites, metrics) + _branch_notes(sites, metrics) + _unused_notes(sites, metrics)
    steps = _keras_private.optimizer_steps(model)
    return HealthReport(metrics, findings, gradient_ratio, loss_value, source, t, notes, steps)


def _branch_notes(sites, metrics):
    """Which gradient ratios the vanishing rule judged divided by a residual branch's
    scale (`keras_initkit.checks.gradients.branch_scale`), or not at all."""
    scales = {
        site.name: branch_scale(site)
        for site in sites
        if "gradient_ratio" in metrics.get(site.name, {}) and site.gate is not None
    }
    scaled = {name: scale for name, scale in scales.items() if scale < 1.0}
    if not scaled:
        return ()
    low, high = min(scaled.values()), max(scaled.values())
    span = f"{low:.1e}" if low == high else f"{low:.1e} to {high:.1e}"
    return (
        f"{len(scaled)} layer(s) run in residual branches closed by a scale of {span} "
        "(a LayerScale, a batch-norm γ or a last layer near zero): their gradients are that "
        "much smaller by design, and the vanishing rule judges their gradient ratio divided "
        "by the scale (not at all where it is 0).",
    )


def _unused_notes(sites, metrics):
    """Which layers the gradient rules left out: the loss does not depend on them."""
    unused = [s.name for s in sites if s.unused and "gradient_norm" in metrics.get(s.name, {})]
    if not unused:
        return ()
    named = ", ".join(unused[:4]) + (f" and {len(unused) - 4} more" if len(unused) > 4 else "")
    return (
        f"{len(unused)} layer(s) reach none of the model's outputs, so the loss does not "
        f"depend on them (gradient 0, not judged): {named}.",
    )


def _notes(sites, metrics):
    """Information that is not a finding: untrained batch-norm moving statistics (of
    trainable layers: `recalibrate_batchnorm` leaves frozen ones, which get the `frozen`
    finding)."""
    frozen = {s.name for s in sites if not s.layer.trainable}
    untrained = [
        name for name, v in metrics.items() if v.get("bn_untrained") == 1.0 and name not in frozen
    ]
    if not untrained:
        return ()
    return (
        f"{len(untrained)} batch-norm layer(s) have untrained moving statistics (mean 0, "
        "variance 1), as every freshly built network does; run "
        "keras_initkit.recalibrate_batchnorm(model, data) before evaluating.",
    )

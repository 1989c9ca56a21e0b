"""Gradient check: per-layer gradient flow, and the one definition of vanishing and
exploding gradients."""

import math

import numpy as np

from keras_initkit import validation
from keras_initkit.checks.base import Check
from keras_initkit.checks.rules import Rule
from keras_initkit.probe.backend import to_numpy
from keras_initkit.probe.selection import scale_of

GRADIENT_METRICS = ("gradient_norm", "update_ratio", "weight_norm", "gradient_ratio")


def _exploding_value(site, scalars):
    g = scalars.get("gradient_norm")
    if g is not None and not math.isfinite(g):
        return g
    if getattr(site, "closes_branch", False) and _gain(site.layer) < GATE:
        return None  # a scale started near zero on purpose: any step is larger than it
    return scalars.get("update_ratio")


def shapes_attention_scores(site):
    """True for attention's query and key projections. They only shape the scores: while
    the attention is near uniform their gradients are orders of magnitude below the
    others', as expected (a Transformer encoder's first block over a Keras Embedding, at
    initialization: 4e-4 and 3e-5 x the head's; see docs/health.md). Gradient-flow
    judgements leave them out. `site` None (a bare value): False."""
    return getattr(site, "role", None) == "attention_scores"


GATE = 0.1  # a residual branch closed by a smaller scale is small by design


def branch_scale(site):
    """The scale that closes `site`'s residual branch (`Site.gate`) where it is below
    `GATE`, else 1.0: max |γ| of a normalization or LayerScale; a kernel layer's gain,
    rms(kernel) × √fan-in, 0 for a zero kernel.

    ConvNeXt's blocks end in a LayerScale of γ = 1e-6, Fixup and zero-γ ResNets in a
    zero last layer or batch-norm γ: every gradient inside the branch is that much
    smaller, by design, and grows with the scale, while the residual stream carries the
    gradient past the branch. `site` None (a bare value): 1.0."""
    gate = getattr(site, "gate", None)
    if gate is None:
        return 1.0
    gain = _gain(gate)
    return gain if gain < GATE else 1.0


def _gain(layer):
    values = np.abs(to_numpy(scale_of(layer))).astype(np.float64)
    if getattr(layer, "kernel", None) is None:
        return float(values.max(initial=0.0))
    fan_in = values.size / max(values.shape[-1], 1) if values.ndim else 1
    return float(np.sqrt(np.mean(values**2) * fan_in)) if values.size else 0.0


def _vanishing_value(site, scalars):
    if shapes_attention_scores(site):
        return None
    ratio = scalars.get("gradient_ratio")
    if ratio is None:
        return None
    scale = branch_scale(site)
    return ratio / scale if scale > 0 else None


def _vanishing_observation(context):
    ratio, value, reference = context["gradient_ratio"], context["value"], context["reference"]
    scale = context.get("branch_scale", 1.0)
    if scale >= 1.0:
        return f"gradient norm is {value:.1e} × that of {reference}: vanishing gradients"
    return (
        f"gradient norm is {ratio:.1e} × that of {reference}, {value:.1e} × once divided by "
        f"its residual branch's scale ({scale:.1e}): vanishing gradients"
    )


def _exploding_observation(context):
    g, value = context["gradient_norm"], context["value"]
    if not math.isfinite(g):
        return f"gradient norm is {g}: exploding gradients"
    return (
        f"update_ratio {value:.3g}: one SGD step would change the weights by {value:.0%} of "
        f"their norm (gradient_norm {g:.3g}): exploding gradients"
    )


VANISHING = Rule(
    name="vanishing",
    kind="vanishing_gradients",
    metric="gradient_ratio",
    definition=(
        "`gradient_ratio` = ‖g‖ of a kernel or recurrent layer / ‖g‖ of the last kernel "
        "layer (the output layer; in a model with several output heads, of the heads the "
        "layer feeds, the one with the largest ‖g‖, an output without a loss none), ‖g‖ "
        "the norm of the gradient of the loss over the layer's own weights, is "
        "below the threshold (1e-3: AutoTrainer's first-to-last rule, applied to every layer "
        "but the query and key projections of attention layers, whose gradients are "
        "expected to be small while the attention is near uniform). In a residual branch "
        "closed by a scale below 0.1 (a LayerScale, a batch-norm γ or a last layer "
        "initialized near zero: ConvNeXt, Fixup), the ratio is first divided by that "
        "scale, which makes the branch's gradients small by design; a zero scale: not "
        "judged. Nor is a layer no path connects to the model's outputs (BERT's "
        "`pooled_dense` under a head on `sequence_output`): the loss does not depend on it"
    ),
    observation=_vanishing_observation,
    fix=(
        "try He/orthogonal or LSUV initialization (keras_initkit.lsuv_init), batch "
        "normalization, or residual connections."
    ),
    threshold="gradient_ratio",
    default=1e-3,
    below=True,
    argument="vanishing_threshold",
    value=_vanishing_value,
)

EXPLODING = Rule(
    name="exploding",
    kind="exploding_gradients",
    metric="update_ratio",
    definition=(
        "`update_ratio` = learning rate × ‖g‖ / ‖w‖, the relative size of one SGD step "
        "(measured under SGD only: an adaptive optimizer's step does not scale with ‖g‖), is "
        "above the threshold (a step larger than the weights themselves), or ‖g‖ is not "
        "finite. Not the step's size for the scale closing a residual branch while it is "
        "below 0.1 (a LayerScale's γ = 1e-6, as `vanishing`): started near zero on "
        "purpose, any step is larger than it"
    ),
    observation=_exploding_observation,
    fix="lower the learning rate, clip gradients, or use a scaled initialization.",
    threshold="update_ratio",
    default=1.0,
    valid=validation.positive,
    argument="exploding_threshold",
    reads=("update_ratio", "gradient_norm"),
    value=_exploding_value,
    supersedes=("exploding_ratio",),
)

EXPLODING_RATIO = Rule(
    name="exploding_ratio",
    kind="exploding_gradients",
    metric="gradient_ratio",
    definition=(
        "`gradient_ratio` (as for `vanishing`) is above the threshold (1e3: the gradient "
        "grows a thousandfold from the output layer back to this one, the first-to-last "
        "rule mirrored). Judged under every optimizer; under an adaptive one (Adam, "
        "RMSprop, …), whose step does not scale with ‖g‖, it is the only size test"
    ),
    observation="gradient norm is {value:.1e} × that of {reference}: exploding gradients",
    fix=EXPLODING.fix,
    threshold="exploding_gradient_ratio",
    default=1e3,
    valid=validation.positive,
    argument="exploding_ratio_threshold",
)


class GradientCheck(Check):
    """Gradient norms, update ratios and gradient ratios of the layers owning weights.

    Measured by the gradient probe (`keras_initkit.probe.gradients`): the data needs
    targets. `gradient_ratio` is reported for kernel and recurrent layers when the last
    kernel layer's gradient norm is finite and positive (absent otherwise, never a fake
    value).
    """

    rules = (EXPLODING, EXPLODING_RATIO, VANISHING)
    metrics = ("gradient_norm", "update_ratio", "weight_norm")
    gradients = True
    log_metrics = ("gradient_norm", "update_ratio")
    layout = {"Gradients": GRADIENT_METRICS}

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        self.reference = None  # the last kernel layer, which gradient ratios compare with
        self._references = {}  # where a model has several output heads: per layer

    def applies(self, site):
        return True  # the gradient probe's sites: every layer owning trainable weights

    def complete(self, sites, scalars):
        # Kernel layers, and recurrent ones (their kernels are their cells'): where
        # gradients vanish or explode through time.
        judged = [
            s
            for s in sites
            if (s.has_kernel or s.kind == "recurrent")
            and not s.unused  # the loss does not depend on it: its gradient is 0
            and "gradient_norm" in scalars.get(s.name, {})
        ]
        kernels = [s for s in judged if s.has_kernel]
        self.reference = kernels[-1].name if kernels and len(judged) >= 2 else None
        self._references = _head_references(judged, scalars) if self.reference else {}
        for site in judged:
            reference = self._references.get(site.name, self.reference)
            last = scalars[reference]["gradient_norm"] if reference else math.nan
            g = scalars[site.name]["gradient_norm"]
            if math.isfinite(g) and math.isfinite(last) and last > 0:
                scalars[site.name]["gradient_ratio"] = g / last

    def context(self, site, scalars, step):
        reference = self._references.get(site.name, self.reference)
        return {"reference": reference, "branch_scale": branch_scale(site)}


def _head_references(sites, scalars):
    """`{site name: name of the output head its gradient ratio compares with}` where the
    model has several heads (`Site.heads`): of the heads a layer's output reaches, the
    one with the largest finite gradient norm, which drives its gradient most; a head
    is its own. An output without a loss (gradient 0) or a head not measured is none.
    Empty where the graph does not tell, or there is one head (the last kernel layer
    then serves every layer, `GradientCheck.reference`)."""
    if any(s.heads is None for s in sites) or len(set().union(*(s.heads for s in sites))) < 2:
        return {}
    names = {id(s.layer): s.name for s in sites}

    def norm(name):
        g = scalars[name]["gradient_norm"]
        return g if math.isfinite(g) and g > 0 else None

    references = {}
    for site in sites:
        heads = [names[id(h)] for h in site.heads if id(h) in names and norm(names[id(h)])]
        if id(site.layer) in {id(h) for h in site.heads}:
            heads = [site.name]
        references[site.name] = max(heads, key=norm) if heads else None
    return references

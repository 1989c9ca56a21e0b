"""Checks on layer outputs: their scale through depth, saturation, dead units."""

import dataclasses
import math
import statistics

from keras_initkit import validation
from keras_initkit.checks.base import Check
from keras_initkit.checks.rules import Rule
from keras_initkit.probe import ActivationMoments, DeadUnits, Saturation

MOMENTS = ("activation_mean", "activation_std")
DELTA = 0.01  # the default saturation margin, relative to the activation's range
SATURATION_METRICS = ("saturated_fraction", "saturated_low", "saturated_high", "abs_p98")
DEAD_METRICS = ("dead_fraction", "inactive_fraction", "firing_rate")
_SCALE_FIX = "use He (ReLU) or Glorot (tanh, sigmoid) initialization, or keras_initkit.lsuv_init."
_INPUT_FIX = "normalize the inputs (a keras.layers.Rescaling or Normalization layer first)."


# The forward rules whose statistics describe NaN, not units, in a layer whose output is
# not finite: `NON_FINITE` supersedes them.
_FORWARD_RULES = (
    "saturated_fraction",
    "dead_fraction",
    "inactive_fraction",
    "symmetric_fraction",
    "frozen",
    "bn_mean_shift",
    "bn_std_ratio",
    "gate_saturated_fraction",
    "recurrent_spectral_radius",
    "short_memory",
    "attention_entropy",
)


def _not_finite(value):
    return value if value is not None and not math.isfinite(value) else None


NON_FINITE = Rule(
    name="non_finite",
    kind="diverged",
    metric="activation_mean",
    definition=(
        "the layer's output holds NaN or inf (`activation_mean`, the mean of every output "
        "value, is not finite); its other forward rules (dead units, saturation, batch "
        "norm, recurrent gates, attention) are then not judged: their statistics describe "
        "NaN, not units, and their fixes would mislead"
    ),
    observation="output holds NaN or inf (mean {value}): the network diverged",
    fix=(
        "lower the learning rate or clip gradients (e.g. `clipnorm=1.0`), check the data and "
        "the loss for NaN, and restart from a checkpoint or a fresh initialization "
        "(keras.callbacks.TerminateOnNaN stops such a fit)."
    ),
    value=lambda site, scalars: _not_finite(scalars.get("activation_mean")),
    supersedes=_FORWARD_RULES,
)


def undefined_if_diverged(reported, values, metrics):
    """`reported` with `metrics` set to NaN where the layer's probe `values` say its
    output holds NaN or inf: a NaN output counts as "never positive" (dead) and "not
    near an asymptote", so the fractions would read 100% dead or 0% saturated. NaN,
    drawn black on the dashboard, says what happened."""
    if _not_finite(values.get("activation_mean")) is None:
        return reported
    return {k: math.nan if k in metrics else v for k, v in reported.items()}


def _above_one(value, name):
    return validation.positive(value, name, above=1.0)


def _depth_observation(verb):
    def observe(context):
        text = (
            f"output std {context['activation_std']:.3g} is {context['value']:.1e} × that "
            f"of {context['reference']}"
        )
        if "rest_median" not in context:
            return f"{text}: activations {verb} through depth"
        pixels = " (pixels in 0–255?)" if context["value"] < 1 else ""
        return (
            f"{text} ({context['reference_std']:.3g}), the first layer, alone out of scale "
            f"(the layers after it: median std {context['rest_median']:.2g}, within "
            f"{context['rest_spread']:.2g}× of the second): the inputs' scale{pixels} or its "
            "initialization's, not depth"
        )

    return observe


def _depth_rule(name, verb, below):
    return Rule(
        name=name,
        kind=name,
        metric="activation_std",
        definition=(
            "among the hidden kernel layers (every kernel layer but the last, in forward "
            "order) whose output does not run straight into normalization layers only "
            "(batch, layer, group, unit or RMS normalization: its scale is normalized away), "
            "the one whose output std is farthest, on a log scale, from the first "
            f"one's has a ratio {'below 1/' if below else 'above '}`activation_std_ratio` "
            "to it (one finding, at that layer). Where, among all hidden kernel layers, the "
            "first alone makes the "
            "finding (the rule would not fire with the second hidden layer as the reference; "
            f"the first one's std is {'above √' if below else 'below 1/√'}"
            "`activation_std_ratio` × the median std of the layers after it; and it is "
            "farther from 1, the unit scale initializations aim at, on a log scale, than "
            "that median), the finding says the first layer alone is out of scale, as "
            "unnormalized inputs make it, and its fix is to normalize the inputs"
        ),
        observation=_depth_observation(verb),
        fix=_SCALE_FIX,
        threshold="activation_std_ratio",
        default=100.0,
        below=below,
        valid=_above_one,
        argument="activation_std_threshold",
        per_value=False,
    )


VANISHING_ACTIVATIONS = _depth_rule("vanishing_activations", "vanish", below=True)
EXPLODING_ACTIVATIONS = _depth_rule("exploding_activations", "explode", below=False)

SATURATED = Rule(
    name="saturated_fraction",
    kind="saturated",
    metric="saturated_fraction",
    definition=(
        "share of a bounded activation's output values (over sample × position × unit) "
        "within `delta` (0.01 by default, relative to the activation's range) of either "
        "asymptote is above the threshold"
    ),
    observation=(
        "{value:.0%} of {activation} outputs saturated (within {delta:g} × range of {low:g} "
        "or {high:g}; {saturated_low:.0%} low, {saturated_high:.0%} high)"
    ),
    fix=(
        "try Glorot or LSUV initialization (keras_initkit.lsuv_init), normalized inputs, or "
        "a lower learning rate."
    ),
    threshold="saturated_fraction",
    default=0.2,
    argument="saturation_threshold",
)


def _rectifier_rule(name, kind, definition, observation):
    return Rule(
        name=name,
        kind=kind,
        metric=name,
        definition=definition,
        observation=observation,
        fix=(
            "try He or LSUV initialization (keras_initkit.lsuv_init), a leaky activation, or "
            "a lower learning rate."
        ),
        fix_at_init="use He initialization or lsuv_init, and check the bias initialization.",
        threshold="dead_fraction",
        default=0.5,
        argument="dead_threshold",
    )


DEAD = _rectifier_rule(
    "dead_fraction",
    "dead",
    "share of a ReLU or ReLU6 layer's units (channels of the output's last axis, axis 1 for "
    "`channels_first` and the layers they feed) whose output is ≤ 0 for every sample and position of the data is "
    "above the threshold",
    "{value:.0%} of units dead{count}",
)
INACTIVE = _rectifier_rule(
    "inactive_fraction",
    "inactive",
    "the `dead_fraction` rule for leaky rectifiers (LeakyReLU, ELU, SELU, PReLU), on the "
    "sign of the output, which is the pre-activation's",
    "{value:.0%} of units inactive (never positive){count}",
)


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


def first_layer_out_of_scale(stds, limit, vanishing):
    """`(median, spread)` of `stds[1:]` when the first of the hidden kernel layers'
    output `stds` alone makes their scale-through-depth finding under `limit` (a
    `vanishing` one, or an exploding one); else None.

    The first layer is the only one whose output scale is the inputs' scale times its
    initialization's; a normalization after it (batch norm) resets the scale, so pixels
    in 0–255 leave it alone ~100× above the rest. The ratio to it then measures the
    inputs, not depth. It does when all three hold:

    - without it, the rule would not fire: the layers after it stay within `limit` of
      the second (`spread`, the widest factor between them and the second);
    - it is off the layers after it: beyond √`limit` × their `median` (geometric, on
      the log scale), on the finding's side (above it where they vanish, below it
      where they explode);
    - it, not they, is off the unit scale that initializations (He, Glorot, LSUV) and
      normalization layers aim at: its std is farther from 1, on a log scale, than the
      median is.

    The last tells a first layer out of scale (std 75, the rest ~0.2) from a collapse
    right after a first layer in scale (std 1, the rest ~0.005): activations that do
    vanish, at the second layer.
    """
    if len(stds) < 2 or min(stds) <= 0:
        return None
    rest = depth_ratio(stds[1:])
    spread = 1.0 if rest is None else max(rest[1], 1 / rest[1])
    if spread > limit:
        return None
    median = math.exp(statistics.median(math.log(s) for s in stds[1:]))
    off = math.log(stds[0] / median) * (1 if vanishing else -1)
    if off <= math.log(limit) / 2 or abs(math.log(stds[0])) <= abs(math.log(median)):
        return None
    return median, spread


class ActivationCheck(Check):
    """Output mean and std of every layer with a kernel or an activation, and their scale
    through depth (`vanishing_activations`, `exploding_activations`)."""

    rules = (NON_FINITE, VANISHING_ACTIVATIONS, EXPLODING_ACTIVATIONS)
    metrics = MOMENTS
    samples = True
    layout = {"Activations": MOMENTS}

    def reducers(self):
        return [ActivationMoments()]

    def applies(self, site):
        return site.activation is not None or site.has_kernel

    def findings(self, sites, scalars, step, epoch_end=True):
        yield from super().findings(sites, scalars, step, epoch_end)  # non_finite
        kernels = [s for s in sites if s.has_kernel]
        hidden = [
            s
            for s in kernels[:-1]
            if math.isfinite(scalars.get(s.name, {}).get("activation_std", math.nan))
        ]
        limit = self.thresholds["activation_std_ratio"]

        def beyond(extreme):
            return extreme is not None and not 1 / limit <= extreme[1] <= limit

        stds = [scalars[s.name]["activation_std"] for s in hidden]
        judged, extreme, rest = hidden, depth_ratio(stds), None
        if beyond(extreme):
            # The inputs' scale: read off every hidden layer (a batch norm after the
            # first is how it shows, see `first_layer_out_of_scale`).
            rest = first_layer_out_of_scale(stds, limit, vanishing=extreme[1] < 1)
        if rest is None:
            # Depth: only layers whose output scale reaches the next layer. One that runs
            # straight into a normalization is normalized away (NASNet's separable convs:
            # std 0.005, each into a batch norm, read "vanish through depth").
            judged = [s for s in hidden if not s.normalized]
            extreme = depth_ratio([scalars[s.name]["activation_std"] for s in judged])
            if not beyond(extreme):
                return
        site, ratio = judged[extreme[0]], extreme[1]
        rule = VANISHING_ACTIVATIONS if ratio < 1 else EXPLODING_ACTIVATIONS
        context = {**scalars[site.name], "value": ratio, "reference": judged[0].name}
        if rest is not None:
            context.update(reference_std=stds[0], rest_median=rest[0], rest_spread=rest[1])
            rule = dataclasses.replace(rule, fix=_INPUT_FIX, fix_at_init=None)
        yield site, rule, ratio, rule.observe(context)


class SaturationCheck(Check):
    """Saturated outputs of bounded activations (`saturated_fraction`).

    Args:
        delta: distance to an asymptote, relative to the activation's range, within
            which a value counts as saturated, in (0, 0.5). Defaults to `0.01`.
        saturation_threshold: see the `saturated_fraction` rule. Defaults to `0.2`.
    """

    rules = (NON_FINITE, SATURATED)
    metrics = SATURATION_METRICS + MOMENTS
    samples = True
    log_metrics = ("saturated_fraction",)
    layout = {"Saturation": SATURATION_METRICS, "Activations": MOMENTS}

    def __init__(self, delta=DELTA, **thresholds):
        super().__init__(**thresholds)
        if not 0 < validation.fraction(delta, "delta") < 0.5:
            raise ValueError(f"Argument `delta` must be in (0, 0.5). Received: delta={delta!r}")
        self.delta = float(delta)

    def reducers(self):
        return [ActivationMoments(), Saturation(self.delta)]

    def report(self, site, values, step):
        reported = super().report(site, values, step)
        return undefined_if_diverged(reported, values, SATURATION_METRICS)

    def applies(self, site):
        return site.kind == "bounded"

    def context(self, site, scalars, step):
        low, high = site.bounds
        return {"activation": site.activation, "delta": self.delta, "low": low, "high": high}


class DeadUnitCheck(Check):
    """Dead (ReLU, ReLU6) and inactive (leaky variants) units of rectifier layers."""

    rules = (NON_FINITE, DEAD, INACTIVE)
    metrics = DEAD_METRICS + MOMENTS
    samples = True
    log_metrics = ("dead_fraction", "inactive_fraction")
    layout = {"Dead units": DEAD_METRICS, "Activations": MOMENTS}

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        self._units = {}  # site name -> number of units, for the observation

    def reducers(self):
        return [ActivationMoments(), DeadUnits()]

    def applies(self, site):
        return site.kind in ("dead", "inactive")

    def report(self, site, values, step):
        if "unit_firing_rate" in values:
            self._units[site.name] = len(values["unit_firing_rate"])
        return undefined_if_diverged(super().report(site, values, step), values, DEAD_METRICS)

    def context(self, site, scalars, step):
        units, fraction = self._units.get(site.name), scalars.get(f"{site.kind}_fraction")
        if not units or fraction is None or not math.isfinite(fraction):
            return {"count": ""}
        return {"count": f" ({round(fraction * units)} of {units})"}

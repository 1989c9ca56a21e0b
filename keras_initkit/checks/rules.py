"""`Rule` (what is judged, how, and what to say) and `Finding` (what a rule found)."""

import dataclasses
from collections.abc import Callable

from keras_initkit import validation


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule of the rule book: a metric, its definition, its threshold and its texts.

    Every consumer reads the rule from here: the monitors and `diagnose` judge layers
    with it, `keras-initkit report` flags logged values with it (`flagged`) and
    `DEFAULT_THRESHOLDS` collects the defaults of every rule.

    Attributes:
        name: the finding's `rule`, e.g. `"dead_fraction"`.
        kind: the problem it diagnoses (the finding's `kind`), e.g. `"dead"`; several
            rules can diagnose one problem (`bn_mean_shift` and `bn_std_ratio` both a
            `"bn_mismatch"`).
        metric: the metric it judges.
        definition: the exact definition of what fires, for the docs.
        observation: what was measured: a `str.format` template over the layer's
            metrics, `value` (the judged value) and the check's context, or a function
            of that context.
        fix: what to try.
        threshold: its key in `DEFAULT_THRESHOLDS`, or `None` for a rule that fires on
            a condition alone (`frozen`).
        default: the default threshold.
        below: fires when the value is below the threshold (else above it). A value
            that is not a number (NaN) fires either way.
        valid: validates a threshold: `valid(value, name) -> float`.
        argument: the monitors' constructor argument that sets the threshold.
        reads: the logged metrics `flagged` judges with this rule; `None` for `metric`
            alone, `()` for none (a value that is only a finding at some moments).
        value: `value(site, scalars) -> float or None`, the judged value; default: the
            layer's `metric`, where present.
        epoch_end: the monitors judge it only at the end of an epoch.
        supersedes: rules not judged for a layer where this one fires.
        fix_at_init: the fix `diagnose` gives, where it differs from `fix` (before
            training, the learning rate plays no part yet).
        per_value: judged on one layer's value alone (`flagged` applies); `False` for
            rules that compare layers with each other.
    """

    name: str
    kind: str
    metric: str
    definition: str
    observation: str | Callable
    fix: str
    threshold: str | None = None
    default: float | None = None
    below: bool = False
    valid: Callable = validation.fraction
    argument: str | None = None
    reads: tuple | None = None
    value: Callable | None = None
    epoch_end: bool = False
    supersedes: tuple = ()
    fix_at_init: str | None = None
    per_value: bool = True

    def measure(self, site, scalars):
        """The value this rule judges for `site`, or None when it does not apply."""
        if self.value is not None:
            return self.value(site, scalars)
        return scalars.get(self.metric)

    def fires(self, value, threshold):
        """Whether `value` is a finding under `threshold`."""
        if value is None:
            return False
        if self.threshold is None:
            return True
        return not value >= threshold if self.below else not value <= threshold

    def observe(self, context):
        """The observation text for a finding with `context` (metrics, value, ...)."""
        if callable(self.observation):
            return self.observation(context)
        return self.observation.format_map(context)


def message(layer, observation, fix="", step=None):
    """A finding's text: `"<layer>[ (step <n>)]: <observation>[ — <fix>]"`."""
    where = layer if step is None else f"{layer} (step {step})"
    return f"{where}: {observation}" + (f" — {fix}" if fix else "")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem a rule found in one layer: what `diagnose` and the monitors record.

    Attributes:
        layer: the layer's display name.
        rule: which rule fired (`Rule.name`), e.g. `"dead_fraction"`.
        value: the number that crossed the threshold (`None` for a custom monitor's
            finding that gives none).
        step: the global training step it was measured at; `None` in `diagnose`.
        message: the full text: layer, step, observation and fix.
        observation: what was measured, without the layer, step and fix.
        fix: the advice `message` ends with: the rule's, or the one its check gave for
            this finding (a layer scale made by unnormalized inputs: normalize them).
    """

    layer: str
    rule: str
    value: float | None
    step: int | None
    message: str
    observation: str = ""
    fix: str = ""

    @property
    def kind(self):
        """The problem the rule diagnoses (`Rule.kind`), e.g. `"dead"` for `dead_fraction`.

        A rule the rule book does not know (a custom monitor's) is its own kind.
        """
        from keras_initkit.checks.book import RULES  # the book imports this module

        rule = RULES.get(self.rule)
        return self.rule if rule is None else rule.kind

    def to_dict(self):
        """The finding as plain data, `kind` included (`observation` where recorded)."""
        data = {**dataclasses.asdict(self), "kind": self.kind}
        for key in ("observation", "fix"):
            if not data[key]:
                del data[key]
        return data

"""The rule book: every check, every rule, and what derives from them.

`DEFAULT_THRESHOLDS` collects the rules' default thresholds; `flagged` judges one
logged value with the same rules (`keras-initkit report`); `assign`, `measure` and
`judge` run a list of checks on probe results, for the monitors and `diagnose` alike.
"""

from keras_initkit.checks.activations import ActivationCheck, DeadUnitCheck, SaturationCheck
from keras_initkit.checks.attention import AttentionCheck
from keras_initkit.checks.batchnorm import BatchNormCheck
from keras_initkit.checks.gradients import GradientCheck
from keras_initkit.checks.recurrent import RecurrentCheck
from keras_initkit.checks.symmetry import SymmetryCheck

# Every check, in the order their findings are listed for one layer.
CHECKS = (
    SaturationCheck,
    DeadUnitCheck,
    SymmetryCheck,
    BatchNormCheck,
    RecurrentCheck,
    AttentionCheck,
    GradientCheck,
    ActivationCheck,
)
RULES = {rule.name: rule for check in CHECKS for rule in check.rules}
DEFAULT_THRESHOLDS = {rule.threshold: rule.default for rule in RULES.values() if rule.threshold}
_BY_THRESHOLD = {rule.threshold: rule for rule in RULES.values() if rule.threshold}


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
        merged[key] = _BY_THRESHOLD[key].valid(value, key)
    return merged


def flagged(metric, value, thresholds=None, rules=None):
    """True when one logged or measured `metric` value is a finding.

    Judged by every rule that reads `metric` on a layer's value alone (`Rule.reads`);
    other metrics are never flagged. `rules`: only these rule names (a layer's
    findings, where its site is known: a rule may exempt a site, as the vanishing
    rule does attention's query and key projections).
    """
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    for rule in RULES.values():
        reads = (rule.metric,) if rule.reads is None else rule.reads
        if rules is not None and rule.name not in rules:
            continue
        if rule.per_value and rule.threshold and metric in reads:
            if rule.fires(rule.measure(None, {metric: value}), thresholds[rule.threshold]):
                return True
    return False


def default_checks(thresholds=None):
    """One instance of every check, with `thresholds` (`{key: value}`, validated)."""
    thresholds = check_thresholds(thresholds)
    return [cls.from_thresholds(thresholds) for cls in CHECKS]


def metric_limits(checks):
    """`(upper, lower)`: `{metric: threshold}` from the rules of `checks` that judge one
    logged value on its own. A value above `upper[metric]` or below `lower[metric]` (a
    lower-is-worse rule, such as vanishing gradients) is beyond a rule's threshold:
    what the dashboard colours warm and `keras-initkit report` marks `!`. A metric
    judged by several rules on one side keeps the first rule's threshold."""
    upper, lower = {}, {}
    for _, rule, limit, _ in _logged_rules((check, ()) for check in checks):
        (lower if rule.below else upper).setdefault(rule.metric, limit)
    return upper, lower


def epoch_end_metrics(checks):
    """The metrics of `metric_limits` whose rules all judge only at the end of an epoch
    (`Rule.epoch_end`: the batch-norm rules): a value logged inside an epoch is not a
    finding yet."""
    ends = {}
    for _, rule, _, _ in _logged_rules((check, ()) for check in checks):
        ends[rule.metric] = ends.get(rule.metric, True) and rule.epoch_end
    return sorted(metric for metric, only in ends.items() if only)


def _logged_rules(assignment):
    """`(check, rule, limit, sites)` of the rules behind `metric_limits` in `assignment`."""
    for check, sites in assignment:
        for rule in check.rules:
            limit = check.limit(rule)
            if limit is not None and rule.reads != ():
                yield check, rule, limit, sites


def exempt_layers(assignment):
    """`{"above": {metric: [layer]}, "below": {...}}`, sides without any left out: the
    layers whose logged `metric` a rule behind `metric_limits` does not judge as it is
    (the vanishing rule leaves out attention's query and key projections, and divides
    the ratio of a layer in a residual branch closed by a small scale by that scale),
    or never judges (`Check.judged_from`: batch norm at momentum 1).
    `assignment`: `[(check, sites)]`, as `assign` gives."""
    out = {"above": {}, "below": {}}
    for check, rule, limit, sites in _logged_rules(assignment):
        names = [
            s.name
            for s in sites
            if rule.measure(s, {rule.metric: limit}) != limit or check.judged_from(rule, s) is None
        ]
        if names:
            layers = out["below" if rule.below else "above"].setdefault(rule.metric, [])
            layers.extend(n for n in names if n not in layers)
    return {side: metrics for side, metrics in out.items() if metrics}


def judged_from(assignment):
    """`{metric: {layer: step}}`: the layers whose logged `metric` the rules behind
    `metric_limits` judge only from a later global `step` on (`Check.judged_from`; the
    batch-norm mismatch rules wait while the initial moving statistics weigh more than
    `init_weight_threshold`). Values logged before it are not findings."""
    out = {}
    for check, rule, _, sites in _logged_rules(assignment):
        for site in sites:
            if step := check.judged_from(rule, site):
                per_layer = out.setdefault(rule.metric, {})
                per_layer[site.name] = max(step, per_layer.get(site.name, 0))
    return out


def reducers(checks):
    """The probe `Reducer`s `checks` need, each once (by name), for one shared pass."""
    needed = {}
    for check in checks:
        for reducer in check.reducers():
            needed.setdefault(reducer.name, reducer)
    return list(needed.values())


def assign(checks, sites, gradient_sites=()):
    """`[(check, the sites it applies to)]`: forward checks on `sites`, gradient checks
    on `gradient_sites`."""
    return [
        (check, [s for s in (gradient_sites if check.gradients else sites) if check.applies(s)])
        for check in checks
    ]


def measure(assignment, result, gradients=None, step=None):
    """`{site name: {metric: value}}` from a forward and a gradient `ProbeResult`."""
    scalars = {}
    for check, sites in assignment:
        source = gradients if check.gradients else result
        for site in sites:
            values = source.metrics.get(site.name) if source is not None else None
            reported = check.report(site, values, step) if values else None
            if reported:
                scalars.setdefault(site.name, {}).update(reported)
        check.complete(sites, scalars)
    return scalars


def judge(assignment, scalars, step=None, epoch_end=True):
    """Every check's findings on `scalars`: `(check, site, rule, value, observation)`,
    less those a finding of another check on the same layer supersedes (`non_finite`:
    a layer whose output holds NaN is not also "100% dead"), once per layer and rule
    (several checks judge `non_finite`)."""
    found = [
        (check, *finding)
        for check, sites in assignment
        for finding in check.findings(sites, scalars, step, epoch_end)
    ]
    superseded = {(site.name, name) for _, site, rule, *_ in found for name in rule.supersedes}
    seen = set()
    for item in found:
        key = (item[1].name, item[2].name)
        if key not in superseded and key not in seen:
            seen.add(key)
            yield item

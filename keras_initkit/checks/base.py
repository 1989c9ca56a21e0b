"""`Check`: the reducers a check needs, the layers it applies to, and its rules."""


class Check:
    """What to measure on which layers, and the rules that judge it.

    A check declares the probe `Reducer`s it needs (`reducers`), the layers (`Site`s) it
    applies to (`applies`), the per-layer metrics it reports from the probe's values
    (`report`, `complete`) and its `rules`. The monitors and `diagnose` run checks;
    neither knows what a check measures.

    A check may keep what it measured for its observation texts (unit counts, the
    reference layer), so each monitor and each `diagnose` call uses its own instances.

    Args:
        **thresholds: the thresholds of its rules, by the monitors' argument names
            (`Rule.argument`, e.g. `dead_threshold=0.3`), validated here. Defaults to
            each rule's `default`.

    Class attributes:
        rules: the `Rule`s it judges, in the order they are judged.
        metrics: the metrics `report` copies from the probe's values.
        gradients: measured on the gradient probe (needs targets) instead of the
            forward probe.
        samples: its layers end in bounded or rectifier activations, whose outputs
            the monitors can write as histograms.
        log_metrics: the metrics a monitor adds to the epoch `logs`.
        layout: `{Custom Scalars category: metrics}`.
    """

    rules = ()
    metrics = ()
    gradients = False
    samples = False
    log_metrics = ()
    layout = {}

    def __init__(self, **thresholds):
        arguments = {rule.argument: rule for rule in self.rules if rule.argument}
        unknown = sorted(set(thresholds) - set(arguments))
        if unknown:
            raise ValueError(
                f"`{type(self).__name__}` takes the thresholds {sorted(arguments)}. "
                f"Received: {', '.join(unknown)}"
            )
        self.thresholds = {}
        for argument, rule in arguments.items():
            value = thresholds.get(argument, rule.default)
            self.thresholds[rule.threshold] = rule.valid(value, argument)

    @classmethod
    def from_thresholds(cls, thresholds, **options):
        """The check with the thresholds of a validated `{threshold key: value}` dict."""
        arguments = {r.argument: thresholds[r.threshold] for r in cls.rules if r.argument}
        return cls(**options, **arguments)

    def reducers(self):
        """The probe `Reducer`s it needs."""
        return []

    def applies(self, site):
        """Whether it reports on `site`."""
        return False

    def report(self, site, values, step):
        """`{metric: float}` for `site` from the probe's `values` at global `step`."""
        return {k: values[k] for k in self.metrics if k in values}

    def complete(self, sites, scalars):
        """Add metrics that compare layers (in `scalars`, `{site name: {metric: value}}`)."""

    def limit(self, rule):
        """The threshold `rule` compares a layer's value with, or None (not per value)."""
        return self.thresholds.get(rule.threshold) if rule.per_value else None

    def judged_from(self, rule, site):
        """The first global step at which the monitors judge `rule` on `site` (0: from
        the start), or None when they never do; a rule may wait for what another
        rule reports first (the batch-norm mismatch rules, while the initial moving
        statistics weigh more than `init_weight_threshold`)."""
        return 0

    def context(self, site, scalars, step):
        """Extra names the observation texts use for `site`."""
        return {}

    def findings(self, sites, scalars, step, epoch_end=True):
        """`(site, rule, value, observation)` for each rule that fires, in layer order.

        `epoch_end` is False for a monitor's measurement inside an epoch, where rules
        marked `epoch_end` wait.
        """
        for site in sites:
            values = scalars.get(site.name)
            if values:
                yield from self.judge(site, values, step, epoch_end)

    def judge(self, site, values, step, epoch_end=True):
        """The per-layer rules' findings for one layer (see `findings`)."""
        skipped = set()
        for rule in self.rules:
            if not rule.per_value or rule.name in skipped or (rule.epoch_end and not epoch_end):
                continue
            value = rule.measure(site, values)
            if rule.fires(value, self.thresholds.get(rule.threshold)):
                skipped.update(rule.supersedes)
                context = {**values, **self.context(site, values, step), "value": value}
                yield site, rule, value, rule.observe(context)

"""Findings that read like a diagnosis: one block per rule, its layers as ranges."""

import dataclasses

from keras_initkit.checks.book import RULES
from keras_initkit.checks.rules import Finding
from keras_initkit.table import MAX_RUNS, capped_runs, spanned


def layer_ranges(names, order):
    """`names` as runs of consecutive layers in forward `order`: "a … d, f, h … k".

    A run of two or more consecutive layers (no other layer of `order` between them)
    reads "first … last"; more than `MAX_RUNS` runs end in "and N more".
    """
    runs, rest = capped_runs(names, order, MAX_RUNS)
    parts = [run[0] if len(run) == 1 else f"{run[0]} … {run[-1]}" for run in runs]
    return ", ".join(parts + ([f"and {rest} more"] if rest else []))


@dataclasses.dataclass(frozen=True)
class Block:
    """One rule's findings taken together.

    Attributes:
        rule: the rule's name.
        layers: the layers it fired on, in forward order.
        worst: the finding with the most extreme value (the first when values are
            missing).
        fix: what to try.
    """

    rule: str
    layers: tuple
    worst: Finding
    fix: str

    def text(self, order, step=None, scalars=None):
        """`"<rule>: <ranges> (<n> layers); worst <layer>: <observation> — <fix>"`.

        With the layers' `scalars`, a run is broken only by a layer the rule measured
        (one holding its metric) and did not fire on: ConvNeXt's GELU layers between
        its convolutions do not split a run of vanishing-gradient findings."""
        if scalars is not None:
            order = judged(self.rule, order, scalars, self.layers)
        where = layer_ranges(self.layers, order)
        count = f" ({len(self.layers)} layers)" if len(self.layers) > 1 else ""
        at = "" if step is None else f" at step {step}"
        observation = self.worst.observation or self.worst.message
        head = f"{self.rule}{at}: {where}{count}"
        if len(self.layers) > 1:
            head += f"; worst {self.worst.layer}: {observation}"
        else:
            head += f": {observation}"
        return head + (f" — {self.fix}" if self.fix else "")


def judged(rule, order, scalars, layers=()):
    """The layers of `order` that `rule` (a name of `RULES`) measures, a metric it reads
    in their `scalars`, and `layers`."""
    spec = RULES.get(rule)
    if spec is None:
        return list(order)
    metrics = spec.reads or (spec.metric,)
    measured = [n for n in order if any(m in scalars.get(n, ()) for m in metrics)]
    return spanned(order, measured, layers)


def blocks(findings, fixes, below=()):
    """One `Block` per rule, in the order rules first fire; `fixes` maps rule -> fix,
    `below` names the rules whose worst value is the lowest."""
    by_rule = {}
    for finding in findings:
        by_rule.setdefault(finding.rule, []).append(finding)
    out = []
    for rule, found in by_rule.items():
        valued = [f for f in found if f.value is not None and f.value == f.value]
        pick = min if rule in below else max
        worst = pick(valued, key=lambda f: f.value) if valued else found[0]
        layers = tuple(dict.fromkeys(f.layer for f in found))
        out.append(Block(rule, layers, worst, fixes.get(rule, "")))
    return out

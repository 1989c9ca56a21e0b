"""Batch-norm check: do the moving statistics match the data they normalize?"""

import functools
import math

import numpy as np

from keras_initkit import validation
from keras_initkit.checks.base import Check
from keras_initkit.checks.rules import Rule
from keras_initkit.probe import BatchNormStatistics

BN_METRICS = ("bn_mean_shift", "bn_std_ratio", "bn_init_weight")
_RECALIBRATE = "run keras_initkit.recalibrate_batchnorm(model, data) before evaluating"
_MISMATCH = "inference normalizes differently from training"


def _mismatch(site, scalars, metric):
    """A mismatch is judged once the moving statistics moved from their initial values
    (mean 0, variance 1 exactly: a freshly built layer is information, not a finding),
    and not for a frozen layer (`FROZEN`: training normalizes with them too)."""
    if scalars.get("bn_untrained") == 1.0 or (site is not None and not site.layer.trainable):
        return None
    return scalars.get(metric)


FROZEN = Rule(
    name="frozen",
    kind="frozen",
    metric="bn_mean_shift",
    definition=(
        "a batch-norm layer has `trainable=False`: Keras 3 then normalizes with its moving "
        "statistics during training too (intended when fine-tuning); training and inference "
        "then normalize alike, so the mismatch rules are not judged for it"
    ),
    observation=(
        "trainable=False, so it normalizes with its frozen moving statistics during training "
        "as well (bn_mean_shift {bn_mean_shift:.2f}, bn_std_ratio {bn_std_ratio:.2f} on the "
        "data)"
    ),
    fix="intended when fine-tuning; otherwise set trainable=True.",
    value=lambda site, scalars: None if site.layer.trainable else scalars.get("bn_mean_shift"),
    supersedes=("bn_init_weight",),
)

INIT_WEIGHT = Rule(
    name="bn_init_weight",
    kind="bn_mismatch",
    metric="bn_init_weight",
    definition=(
        "`bn_init_weight` = momentum^n, the weight the initial values (mean 0, variance 1) "
        "still have in the moving statistics n training steps after the monitor last saw "
        "them there (after the global step 0 for a layer first seen trained later; none for "
        "statistics set otherwise: pretrained, seen first at step 0, or set by "
        "`recalibrate_batchnorm`), is above the threshold at the end of an epoch; the "
        "mismatch rules then wait, the mismatch being the initial value's"
    ),
    observation=(
        "after {updates} updates at momentum {momentum:g}, the initial value still weighs "
        "{weight} in the moving statistics that validation and inference use "
        "(bn_mean_shift {bn_mean_shift:.2f}, bn_std_ratio {bn_std_ratio:.2f})"
    ),
    fix=f"lower `momentum` (e.g. 0.9) or {_RECALIBRATE}.",
    threshold="bn_init_weight",
    default=0.05,
    argument="init_weight_threshold",
    epoch_end=True,
    supersedes=("bn_mean_shift", "bn_std_ratio"),
)

MEAN_SHIFT = Rule(
    name="bn_mean_shift",
    kind="bn_mismatch",
    metric="bn_mean_shift",
    definition=(
        "mean over channels c of |d_c|, d_c = (m_c − μ_c) / sqrt(s²_c + eps) with moving mean "
        "m and the data's mean μ and biased variance s² of the layer's input, is above the "
        "threshold (at the end of an epoch)"
    ),
    observation=(
        "moving mean is off by {value:.2f} input standard deviations on average "
        f"(bn_mean_shift): {_MISMATCH}"
    ),
    fix=f"{_RECALIBRATE}.",
    threshold="bn_mean_shift",
    default=0.5,
    valid=validation.positive,
    argument="mean_shift_threshold",
    epoch_end=True,
    value=lambda site, scalars: _mismatch(site, scalars, "bn_mean_shift"),
)

STD_RATIO = Rule(
    name="bn_std_ratio",
    kind="bn_mismatch",
    metric="bn_std_ratio",
    definition=(
        "exp(max over channels c of |log r_c|), r_c = sqrt((v_c + eps) / (s²_c + eps)) with "
        "moving variance v, the worst factor by which a channel's moving std is off, is "
        "above the threshold (> 1; at the end of an epoch)"
    ),
    observation=(
        f"moving standard deviation is off by a factor of up to {{value:.2f}} (bn_std_ratio): "
        f"{_MISMATCH}"
    ),
    fix=f"{_RECALIBRATE}.",
    threshold="bn_std_ratio",
    default=2.0,
    valid=functools.partial(validation.positive, above=1.0),
    argument="std_ratio_threshold",
    epoch_end=True,
    value=lambda site, scalars: _mismatch(site, scalars, "bn_std_ratio"),
)


class BatchNormCheck(Check):
    """Batch-norm moving statistics against the statistics of the layer's input.

    Reports `bn_mean_shift`, `bn_std_ratio` and, for trainable layers measured during
    training (a step is known), `bn_init_weight`.
    """

    rules = (FROZEN, INIT_WEIGHT, MEAN_SHIFT, STD_RATIO)
    metrics = ("bn_mean_shift", "bn_std_ratio", "bn_untrained")
    log_metrics = ("bn_mean_shift", "bn_std_ratio")
    layout = {"Batch norm": BN_METRICS}

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        self._diverged = set()  # layers whose input holds NaN or inf
        # {layer: (the last global step its moving statistics were seen at their
        # initial values, or None: set otherwise (pretrained, recalibrated); how many
        # times `recalibrate_batchnorm` had set them then)}
        self._origin = {}

    def reducers(self):
        return [BatchNormStatistics()]

    def applies(self, site):
        return site.is_batchnorm

    def report(self, site, values, step):
        finite = np.all(np.isfinite(values.get("bn_input_mean", 0.0)))
        (self._diverged.discard if finite else self._diverged.add)(site.name)
        out = super().report(site, values, step)
        if out and site.layer.trainable and step is not None:
            origin = self._seen(site.name, values, step)
            if origin is not None:
                out["bn_init_weight"] = float(site.layer.momentum) ** (step - origin)
        return out

    def _seen(self, name, values, step):
        """The step the initial moving statistics of layer `name` count from, after a
        measurement at `step` (`values`: the probe's): the last step they were seen at
        their initial values. Set by `recalibrate_batchnorm` since, or first seen
        trained at step 0 (a pretrained model fine-tuned with a new optimizer), no
        initial values weigh in them (None). First seen trained later, training moved
        them from step 0."""
        count = values.get("bn_recalibrated", 0.0)
        if values.get("bn_untrained") == 1.0:
            origin = step
        elif name not in self._origin:
            origin = 0 if step > 0 and not count else None
        else:
            origin, seen = self._origin[name]
            origin = origin if count == seen else None
        self._origin[name] = origin, count
        return origin

    def _origin_of(self, name):
        return self._origin.get(name, (0, 0))[0]

    def context(self, site, scalars, step):
        origin = self._origin_of(site.name) or 0
        weight = scalars.get("bn_init_weight", math.nan)
        return {
            "momentum": float(site.layer.momentum),
            "updates": (step or 0) - origin,
            # 0.996 (4 steps at momentum 0.999) read "100%": a whole percent only
            # where it does not round to 100.
            "weight": f"{weight:.0%}" if weight < 0.995 else f"{weight:.1%}",
        }

    def judge(self, site, values, step, epoch_end=True):
        """As `Check.judge`; a layer whose input holds NaN or inf (the network before it
        diverged: `non_finite` names the layer that did) gets no mismatch finding, a
        NaN shift describing no statistics."""
        for found in super().judge(site, values, step, epoch_end):
            if site.name not in self._diverged or found[1] not in (MEAN_SHIFT, STD_RATIO):
                yield found

    def judged_from(self, rule, site):
        """The mismatch rules wait while `bn_init_weight` is above its threshold (it
        supersedes them): from the step the initial statistics count from (see
        `_seen`) plus the first n with momentum^n at or below it. Never, where initial
        statistics never move (momentum 1); from the start, where the statistics were
        set otherwise before training."""
        limit = self.thresholds.get(INIT_WEIGHT.threshold)
        if rule.name not in INIT_WEIGHT.supersedes or not site.layer.trainable or limit is None:
            return 0
        origin = self._origin_of(site.name)
        if origin is None:  # no initial values weigh: judged from the start
            return 0
        wait = first_step_at_or_below(float(site.layer.momentum), limit)
        return None if wait is None else origin + wait


def first_step_at_or_below(momentum, limit):
    """The smallest integer n ≥ 0 with momentum^n ≤ `limit` (floats as Python computes
    them, as the monitors do), or None when there is none."""
    if limit >= 1:
        return 0
    if momentum <= 0:
        return 1
    if momentum >= 1 or limit <= 0:
        return None
    n = max(0, math.ceil(math.log(limit) / math.log(momentum)))
    while momentum**n > limit:
        n += 1
    while n > 0 and momentum ** (n - 1) <= limit:
        n -= 1
    return n

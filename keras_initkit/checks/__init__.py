"""The rule book: what is measured on which layers, and what counts as a finding.

A `Check` declares the probe reducers it needs, the layers (`Site`s) it applies to and
its `Rule`s; a `Rule` holds a metric, its exact definition, its default threshold, the
observation text and the fix text, once. The monitors, `diagnose` and
`keras-initkit report` read the same rules, and every rule that fires gives the same
`Finding`. `DEFAULT_THRESHOLDS` is derived from the rules.
"""

from keras_initkit.checks.activations import (
    ActivationCheck,
    DeadUnitCheck,
    SaturationCheck,
    depth_ratio,
)
from keras_initkit.checks.attention import AttentionCheck
from keras_initkit.checks.base import Check
from keras_initkit.checks.batchnorm import BatchNormCheck
from keras_initkit.checks.book import (
    CHECKS,
    DEFAULT_THRESHOLDS,
    RULES,
    assign,
    check_thresholds,
    default_checks,
    flagged,
    judge,
    measure,
    reducers,
)
from keras_initkit.checks.gradients import GradientCheck
from keras_initkit.checks.recurrent import RecurrentCheck
from keras_initkit.checks.rules import Finding, Rule, message
from keras_initkit.checks.symmetry import SymmetryCheck, symmetric_units

__all__ = [
    "CHECKS",
    "DEFAULT_THRESHOLDS",
    "RULES",
    "ActivationCheck",
    "AttentionCheck",
    "BatchNormCheck",
    "Check",
    "DeadUnitCheck",
    "Finding",
    "GradientCheck",
    "RecurrentCheck",
    "Rule",
    "SaturationCheck",
    "SymmetryCheck",
    "assign",
    "check_thresholds",
    "default_checks",
    "depth_ratio",
    "flagged",
    "judge",
    "measure",
    "message",
    "reducers",
    "symmetric_units",
]

"""Checks on attention layers: entropy collapse."""

from keras_initkit.checks.base import Check
from keras_initkit.checks.rules import Rule
from keras_initkit.probe import AttentionEntropy

ATTENTION_METRICS = ("attention_entropy", "attention_max_weight")

COLLAPSED = Rule(
    name="attention_entropy",
    kind="attention_collapse",
    metric="attention_entropy",
    definition=(
        "the lowest head's mean normalized attention entropy (`-Σ p log p / log n` over the n "
        "keys a query may attend to, padded queries excluded: 1 uniform, 0 one-hot) is below "
        "the threshold"
    ),
    observation=(
        "attention entropy {value:.3f} in its lowest head (largest weight {attention_max_weight:.2f} "
        "on average): the attention has collapsed onto single keys"
    ),
    fix=(
        "entropy collapse (Zhai et al. 2023): use σReparam or QK-normalization, a lower "
        "learning rate or a longer warmup."
    ),
    threshold="attention_entropy",
    default=0.05,
    below=True,
    argument="entropy_threshold",
)


class AttentionCheck(Check):
    """Per-head attention entropy of `MultiHeadAttention` layers (and subclasses), and of
    `Attention` and `AdditiveAttention` layers (one head).

    Args:
        entropy_threshold: see the `attention_entropy` rule. Defaults to `0.05`.
    """

    rules = (COLLAPSED,)
    metrics = ATTENTION_METRICS
    log_metrics = ("attention_entropy",)
    layout = {"Attention": ATTENTION_METRICS}

    def reducers(self):
        return [AttentionEntropy()]

    def applies(self, site):
        return site.kind == "attention"

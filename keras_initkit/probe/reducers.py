"""The statistics the monitors and the health check share, as probe `Reducer`s.

Definitions (DESIGN.md, kept exactly):

- `activation_mean`, `activation_std`: over every (sample × position × unit) value of
  the layer's output.
- Saturated (bounded activations): a value within `delta × (high − low)` of either
  asymptote. `saturated_fraction` is the share of saturated values; `saturated_low` and
  `saturated_high` split it by side; `abs_p98` is the 98th percentile of |a| (Glorot &
  Bengio 2010, Fig. 3), read from a histogram of a in bins of 0.1% of max |a|
  (resolution 0.1% of the range). Values within float32 rounding of a threshold may
  fall on either side of it.
- Dead (ReLU, ReLU6): a unit (channel) whose output is <= 0 for every sample and every
  position. `dead_fraction` = dead units / units. For leaky variants (LeakyReLU, ELU,
  SELU, PReLU, ReLU with a negative slope) the same rule on the sign, which equals the
  pre-activation's sign, gives `inactive_fraction`. `firing_rate` is the mean share of
  positive values per unit.
- Batch-norm mismatch per channel c, with moving mean m, moving variance v and the
  probe's pooled mean μ and biased variance s² of the layer's *input*:
  `d_c = (m_c − μ_c) / sqrt(s²_c + eps)` and `r_c = sqrt((v_c + eps) / (s²_c + eps))`.
  `bn_mean_shift` = mean |d|; `bn_std_ratio` = exp(max |log r|), the worst factor by
  which a channel's moving std is off (1.0 is a perfect match).
"""

import functools

import keras
import numpy as np

from keras_initkit.probe import attention, backend, recurrent
from keras_initkit.probe.engine import Reducer, moments
from keras_initkit.probe.selection import BOUNDED
from keras_initkit.validation import one_of

HIST_BINS = 1000
SAMPLE_SIZE = 256


def _all_axes(x):
    return tuple(range(len(x.shape)))


def _channel_axes(x, channel_axis):
    axis = channel_axis % len(x.shape)
    return tuple(i for i in range(len(x.shape)) if i != axis)


class ActivationMoments(Reducer):
    """Mean and std of a layer's output values (not of an attention layer's softmax:
    the attention probabilities, whose mean is 1 / keys; `AttentionEntropy` reads them)."""

    name = "moments"
    merge = {"moments": "moments"}

    def applies(self, site):
        if site.role == "attention_weights":  # mean 1/keys by construction; see attention
            return False
        return site.activation is not None or site.has_kernel or site.kind == "recurrent"

    def reduce(self, site, inputs, pre, outputs):
        return {"moments": moments(outputs, _all_axes(outputs))}

    def finalize(self, site, stats):
        mean, var = stats["moments"]
        return {"activation_mean": float(mean), "activation_std": float(np.sqrt(var))}


@functools.cache
def _abs_order(low, high, bins):
    """`(reach, order)`: bins of `[low, high]` sorted by the largest |a| they hold."""
    edges = np.abs(np.linspace(low, high, bins + 1))
    reach = np.maximum(edges[:-1], edges[1:])
    order = np.argsort(reach, kind="stable")
    return reach[order], order


class Saturation(Reducer):
    """Saturated share of bounded activations, its side, and the 98th pct of |a|.

    One pass over the values: a histogram of `a` over `[low, high]` in bins of width
    `top / HIST_BINS` (`top` = the larger |bound|). When the margin
    `delta × (high − low)` is a whole number of bins (the default `delta=0.01` is)
    the two saturated sides are read off the histogram's end bins; otherwise they
    are counted directly. |a|'s percentile comes from the same histogram.
    """

    name = "saturation"
    merge = {"low": "mean", "high": "mean", "hist": "mean"}

    def __init__(self, delta=0.01):
        self.delta = delta

    def applies(self, site):
        return site.kind == "bounded"

    def _layout(self, site):
        """`(bins, margin_bins)` over `[low, high]`; `margin_bins` None if unaligned."""
        low, high = site.bounds
        bins = round(HIST_BINS * (high - low) / max(abs(low), abs(high)))
        k = self.delta * bins
        return bins, (round(k) if abs(k - round(k)) < 1e-6 else None)

    def reduce(self, site, inputs, pre, outputs):
        low, high = site.bounds
        bins, margin_bins = self._layout(site)
        a = keras.ops.cast(outputs, "float32")
        n = keras.ops.cast(keras.ops.size(a), "float32")
        counts = backend.current().histogram(a, low, high, bins)
        stats = {"hist": keras.ops.reshape(keras.ops.cast(counts, "float32") / n, (bins,))}
        if margin_bins is None:
            margin = self.delta * (high - low)
            stats["low"] = keras.ops.mean(keras.ops.cast(a <= low + margin, "float32"))
            stats["high"] = keras.ops.mean(keras.ops.cast(a >= high - margin, "float32"))
        return stats

    def finalize(self, site, stats):
        low, high = site.bounds
        bins, margin_bins = self._layout(site)
        hist = stats["hist"]
        if margin_bins is None:
            sat_low, sat_high = float(stats["low"]), float(stats["high"])
        else:
            sat_low = float(hist[:margin_bins].sum())
            sat_high = float(hist[bins - margin_bins :].sum())
        # 98th percentile of |a|: the bins ordered by the largest |a| they hold.
        reach, order = _abs_order(low, high, bins)
        cdf = np.cumsum(hist[order])
        p98 = reach[min(np.searchsorted(cdf, 0.98 * cdf[-1]), bins - 1)]
        return {
            "saturated_fraction": sat_low + sat_high,
            "saturated_low": sat_low,
            "saturated_high": sat_high,
            "abs_p98": float(p98),
        }


class DeadUnits(Reducer):
    """Per-unit firing rate of rectifier outputs; dead (or inactive) units."""

    name = "dead"
    merge = {"rate": "mean"}

    def applies(self, site):
        return site.kind in ("dead", "inactive")

    def reduce(self, site, inputs, pre, outputs):
        return {"rate": backend.current().positive_rate(outputs, site.channel_axis)}

    def finalize(self, site, stats):
        rate = stats["rate"]
        return {
            f"{site.kind}_fraction": float(np.mean(rate == 0)),
            "firing_rate": float(np.mean(rate)),
            "unit_firing_rate": rate,
        }


def _log(r):
    """`log r`, `-inf` where a ratio is 0 (an input whose variance overflowed)."""
    with np.errstate(divide="ignore"):
        return np.log(r)


_RECALIBRATED = "_keras_initkit_recalibrated"


def recalibrated(layer):
    """How many times `recalibrate_batchnorm` set `layer`'s moving statistics."""
    return getattr(layer, _RECALIBRATED, 0)


def set_recalibrated(layer, count):
    """Record that `layer`'s moving statistics were set `count` times by
    `recalibrate_batchnorm`: whatever the optimizer's step, no initial values weigh in
    them (the monitors' `bn_init_weight`)."""
    setattr(layer, _RECALIBRATED, count)


class BatchNormStatistics(Reducer):
    """Pooled moments of a batch-norm layer's input against its moving statistics.

    Args:
        variance: how the input variance of several batches is pooled:
            `"population"`, the variance of all samples together (the law of total
            variance: the mean of the per-batch variances plus the variance of the
            batch means), or `"batch_average"`, the mean of the per-batch (biased)
            variances: the normalizer training applied on average, and what Keras'
            moving variance itself tracks. Defaults to `"population"`.
    """

    name = "batchnorm"
    needs = "batch_moments"
    VARIANCES = ("population", "batch_average")

    def __init__(self, variance="population"):
        self.variance = one_of(variance, "variance", self.VARIANCES)
        pooled = "moments" if variance == "population" else "mean"
        self.merge = {"input": pooled, "moving_mean": "last", "moving_variance": "last"}

    def applies(self, site):
        return site.is_batchnorm

    def reduce(self, site, inputs, pre, outputs):
        layer = site.layer
        if pre is None:  # nothing computed by the layer to reuse (see `Reducer`)
            batch = moments(inputs, _channel_axes(inputs, site.channel_axis))
            moving = layer.moving_mean, layer.moving_variance
        else:
            batch = tuple(keras.ops.cast(m, "float32") for m in (pre.mean, pre.variance))
            moving = pre.moving_mean, pre.moving_variance
        return {
            "input": batch,
            "moving_mean": keras.ops.cast(moving[0], "float32"),
            "moving_variance": keras.ops.cast(moving[1], "float32"),
        }

    def finalize(self, site, stats):
        eps = site.layer.epsilon
        mu, s2 = stats["input"]
        with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: NaN, reported as is
            d = (stats["moving_mean"] - mu) / np.sqrt(s2 + eps)
            r = np.sqrt((stats["moving_variance"] + eps) / (s2 + eps))
        untrained = np.all(stats["moving_mean"] == 0) and np.all(stats["moving_variance"] == 1)
        return {
            "bn_mean_shift": float(np.mean(np.abs(d))),
            "bn_std_ratio": float(np.exp(np.max(np.abs(_log(r))))),
            "bn_untrained": float(untrained),
            "bn_recalibrated": float(recalibrated(site.layer)),
            "bn_d": d,
            "bn_r": r,
            "bn_input_mean": mu,
            "bn_input_variance": s2,
        }


class ActivationSample(Reducer):
    """A fixed-size, evenly strided sample of output values, for histograms."""

    name = "sample"
    merge = {"values": "sample"}

    def __init__(self, size=SAMPLE_SIZE):
        self.size = size

    def applies(self, site):
        return site.kind is not None

    def reduce(self, site, inputs, pre, outputs):
        flat = keras.ops.reshape(keras.ops.cast(outputs, "float32"), (-1,))
        n = keras.ops.shape(flat)[0]
        idx = keras.ops.cast(
            keras.ops.linspace(0.0, keras.ops.cast(n - 1, "float32"), self.size), "int32"
        )
        return {"values": keras.ops.reshape(keras.ops.take(flat, idx), (self.size,))}

    def finalize(self, site, stats):
        return {"activation_values": stats["values"]}


class RecurrentGates(Reducer):
    """Gate saturation of recurrent layers, and their recurrent kernels' spectral radii.

    Per `SimpleRNN`, `LSTM` and `GRU` layer (`RNN` with one of their cells), on the
    probe data: every gate value is recomputed from the layer's input and hidden-state
    sequences (`probe.recurrent.gates`); a value is saturated when it lies within
    `delta × (high − low)` of an asymptote of its bounded activation (sigmoid gates
    near 0 or 1, the tanh candidate near ±1). Masked time steps are excluded.

    - `gate_saturated_fraction`: the largest saturated share among the layer's gates;
      `gate_saturated_by_gate` the share per gate (`gate_names`).
    - `recurrent_spectral_radius`: the largest |eigenvalue| of the recurrent kernel's
      gate blocks (a `units × units` block per gate), `..._by_gate` per block. Far
      above 1 the state dynamics explode or turn chaotic, far below 1 the memory
      vanishes; an IRNN (identity recurrent kernel) has exactly 1. Read from the
      weights on the host.
    """

    name = "recurrent"
    merge = {"saturated": "mean", "valid": "mean"}

    def __init__(self, delta=0.01):
        self.delta = delta

    def applies(self, site):
        return site.kind == "recurrent" and recurrent.gate_names(site.layer) is not None

    def reduce(self, site, inputs, pre, outputs):
        mask = pre.mask
        if mask is not None and site.layer.go_backwards:
            mask = keras.ops.flip(mask, axis=1)
        shares = []
        for _, activation, values in recurrent.gates(site.layer, pre):
            bounds = BOUNDED.get(activation)
            if bounds is None:
                shares.append(keras.ops.zeros(()) - 1.0)  # not a bounded gate
                continue
            low, high = bounds
            margin = self.delta * (high - low)
            hit = keras.ops.cast((values <= low + margin) | (values >= high - margin), "float32")
            share = keras.ops.mean(hit, axis=-1)  # (batch, time)
            if mask is not None:
                share = share * keras.ops.cast(mask, "float32")
            shares.append(keras.ops.mean(share))
        valid = (
            keras.ops.ones(()) if mask is None else keras.ops.mean(keras.ops.cast(mask, "float32"))
        )
        return {"saturated": keras.ops.stack(shares), "valid": valid}

    def finalize(self, site, stats):
        valid = float(stats["valid"])
        per_gate = np.where(stats["saturated"] < 0, np.nan, stats["saturated"] / max(valid, 1e-12))
        radii = recurrent.spectral_radii(site.layer)
        values = {
            "recurrent_spectral_radius": float(radii.max()),
            "recurrent_spectral_radius_by_gate": radii,
        }
        if valid > 0 and not np.all(np.isnan(per_gate)):
            values["gate_saturated_fraction"] = float(np.nanmax(per_gate))
            values["gate_saturated_by_gate"] = per_gate
        return values


class AttentionEntropy(Reducer):
    """Per-head entropy of the attention weights of `MultiHeadAttention` layers (and of
    `Attention` and `AdditiveAttention`, as one head).

    The weights come from the layer's own call (`probe.attention.call_attention`:
    `return_attention_scores=True`, the output handed on unchanged). A query row's
    normalized entropy is `-Σ_k p_k log p_k / log n`, over the n keys it may attend to
    (masked keys excluded): 1 for uniform attention, 0 for attention on one key.
    Padded queries (their Keras mask) are left out.

    - `attention_entropy`: the lowest head's mean normalized entropy (a collapsing
      head is the problem, Zhai et al. 2023); `attention_entropy_by_head` per head.
    - `attention_max_weight`: the highest head's mean largest weight per query row;
      `attention_max_weight_by_head` per head.
    """

    name = "attention"
    merge = {"entropy": "mean", "top": "mean", "valid": "mean"}

    def applies(self, site):
        return site.kind == "attention"

    def reduce(self, site, inputs, pre, outputs):
        if pre.scores is None:  # the layer computed no weights this call: not measured
            none = keras.ops.zeros((1,))
            return {"entropy": none, "top": none, "valid": none}
        h, top, valid = attention.entropy(pre)
        return {"entropy": h, "top": top, "valid": valid}

    def finalize(self, site, stats):
        valid = stats["valid"]
        if not np.any(valid > 0):
            return {}
        share = np.where(valid > 0, valid, np.nan)
        entropy, top = stats["entropy"] / share, stats["top"] / share
        return {
            "attention_entropy": float(np.nanmin(entropy)),
            "attention_entropy_by_head": entropy,
            "attention_max_weight": float(np.nanmax(top)),
            "attention_max_weight_by_head": top,
        }

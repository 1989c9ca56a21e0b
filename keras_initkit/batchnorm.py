"""PreciseBN: set batch-norm moving statistics to exact statistics over given data.

Exponential moving averages lag behind the weights they describe and mix statistics of
many past weight states, so after training (or after a few steps, or after surgery on a
model) a batch-norm layer's moving mean and variance can be far from the statistics of
the inputs it actually sees. `recalibrate_batchnorm` replaces them by exact statistics
over given data (Wu & Johnson 2021).

Two methods:

- `"one_pass"` (the default, as published and as fvcore's `update_bn_stats`): one pass
  over the data with frozen weights, batch norm in training mode (each layer normalizes
  with the batch's statistics, so no layer's input depends on another layer's moving
  statistics), every layer's input mean and variance pooled exactly across batches;
  every state update of the pass is discarded and the pooled statistics are assigned at
  the end. Cost: one forward pass over the data, with the memory of one batch.
- `"chain"`: the inference-consistent fixpoint. At inference a layer's input depends on
  the moving statistics upstream of it, so each pass (in inference mode) measures every
  layer and assigns the result, until no layer is off by more than `1e-5` (largest
  per-channel `|d|` and `|log r|`). After pass t every layer with at most t batch-norm
  layers on its longest path from the input is exact: D + 1 passes, D being that depth.

Variance conventions (`variance=`): `"batch_average"` (default), the mean of the
per-batch biased variances: the normalizer training applied on average, which is what
Keras' own moving variance tracks (an average of biased batch variances), so inference
normalizes as training did; use the training batch size. `"population"`: the variance
of all samples together, which adds the variance of the batch means (Keras 3's moving
variance is a *biased* variance in both).
"""

import math
import warnings

import keras
import numpy as np

from keras_initkit import validation
from keras_initkit.probe import (
    BatchNormStatistics,
    Probe,
    as_batches,
    cached,
    check_inputs,
    resolve_layers,
)
from keras_initkit.probe.backend import to_numpy
from keras_initkit.probe.data import is_dataset, is_infinite
from keras_initkit.probe.reducers import recalibrated, set_recalibrated
from keras_initkit.probe.selection import shared_layers
from keras_initkit.table import render

TOLERANCE = 1e-5


class RecalibrationReport:
    """What `recalibrate_batchnorm` did: batch-norm mismatch before and after.

    Mismatch per layer, with the definitions of the probe's `BatchNormStatistics`:
    `bn_mean_shift` is the mean over channels of `|d|`,
    `d = (moving_mean − μ) / sqrt(s² + eps)`, and `bn_std_ratio` is the worst factor
    `exp(max |log r|)`, `r = sqrt((moving_variance + eps) / (s² + eps))`, by which a
    channel's moving std is off; μ and s² are the population mean and biased variance
    of the layer's input over the data. A perfect match is `0.0` and `1.0`.

    Attributes:
        layers: names of the recalibrated batch-norm layers, in forward order.
        before: `layer -> {"bn_mean_shift", "bn_std_ratio"}` before recalibration.
        after: the same after recalibration.
        passes: probe passes over the data that were run.
        source: which data was used, e.g. `"512 samples in 4 batch(es)"`.
    """

    def __init__(self, layers, before, after, passes, source):
        self.layers = list(layers)
        self.before = before
        self.after = after
        self.passes = passes
        self.source = source

    def to_dict(self):
        """The report as plain Python data (JSON-serializable)."""
        return {
            "layers": list(self.layers),
            "before": {k: dict(v) for k, v in self.before.items()},
            "after": {k: dict(v) for k, v in self.after.items()},
            "passes": self.passes,
            "source": self.source,
        }

    def __str__(self):
        if not self.layers:
            return "RecalibrationReport: no batch-norm layer recalibrated; nothing was changed."
        rows = [
            [
                name,
                f"{self.before[name]['bn_mean_shift']:.3g} -> {self.after[name]['bn_mean_shift']:.3g}",
                f"{self.before[name]['bn_std_ratio']:.4g} -> {self.after[name]['bn_std_ratio']:.4g}",
            ]
            for name in self.layers
        ]
        title = (
            f"Recalibrated {len(self.layers)} batch-norm layer(s) on {self.source} "
            f"in {self.passes} pass(es)."
        )
        return render(["layer", "mean shift", "std ratio"], rows, title=title)

    def __repr__(self):
        return (
            f"<RecalibrationReport layers={len(self.layers)} passes={self.passes} "
            f"source={self.source!r}>"
        )


def _is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def _samples(x):
    return keras.tree.flatten(x)[0].shape[0]


def _take_samples(data, num_samples, batch_size):
    """Host `(x, y)` batches holding at most `num_samples` samples, and a description."""
    validation.positive_int(num_samples, "num_samples")
    max_batches = None
    if is_dataset(data) and num_samples is not None:
        first, _ = as_batches(data, max_batches=1)
        max_batches = math.ceil(num_samples / _samples(first[0][0]))
    elif is_infinite(data):
        raise ValueError(
            "Argument `data` is an infinite tf.data.Dataset: pass `num_samples`. "
            "Received: an infinite dataset and num_samples=None"
        )
    batches, source = as_batches(data, batch_size=batch_size, max_batches=max_batches)
    if num_samples is None:
        return batches, source
    kept, total = [], 0
    for x, y in batches:
        n = min(_samples(x), num_samples - total)
        cut = keras.tree.map_structure(lambda a, n=n: a[:n], (x, y), none_is_leaf=False)
        kept.append(cut)
        total += n
        if total >= num_samples:
            break
    return kept, f"{total} samples in {len(kept)} batch(es)"


def _worst(values):
    """Largest per-channel |d| and |log r| of one layer; `inf` when any is not finite
    (a NaN must not pass for a small mismatch: `max` skips it)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_r = np.log(values["bn_r"])
    worst = max(float(np.max(np.abs(values["bn_d"]))), float(np.max(np.abs(log_r))))
    return worst if math.isfinite(worst) else math.inf


def _finite(values):
    return bool(np.isfinite(values["bn_input_mean"]).all()) and bool(
        np.isfinite(values["bn_input_variance"]).all()
    )


def _progress(passes, measured):
    """One pass's line, in the table's units: the layers with the largest mean shift
    and the std ratio farthest from 1 (per-channel |d| and |log r| decide when the
    chain stops, `_worst`; printed, they read unlike the table's figures)."""
    summaries = {name: _summary(values) for name, values in measured.items()}

    def off(ratio):
        return abs(math.log(ratio)) if ratio > 0 and math.isfinite(ratio) else math.inf

    shift = max(summaries, key=lambda n: abs(summaries[n]["bn_mean_shift"]))
    ratio = max(summaries, key=lambda n: off(summaries[n]["bn_std_ratio"]))
    return (
        f"recalibrate_batchnorm pass {passes}: largest bn_mean_shift "
        f"{summaries[shift]['bn_mean_shift']:.3g} ({shift}), bn_std_ratio farthest from 1 "
        f"{summaries[ratio]['bn_std_ratio']:.3g} ({ratio})"
    )


def _summary(values):
    return {
        "bn_mean_shift": float(values["bn_mean_shift"]),
        "bn_std_ratio": float(values["bn_std_ratio"]),
    }


METHODS = ("one_pass", "chain")


def recalibrate_batchnorm(
    model,
    data,
    num_samples=None,
    *,
    batch_size=32,
    layers=None,
    method="one_pass",
    variance="batch_average",
    verbose="auto",
):
    """Set every batch-norm layer's moving statistics to exact statistics over `data`.

    PreciseBN (Wu & Johnson 2021): replaces each `BatchNormalization` layer's
    `moving_mean` and `moving_variance` by the mean and (biased) variance of the
    layer's input over `data`, pooled exactly over batches. By default in one pass with
    batch norm in training mode, as published: each layer's statistics are those of the
    inputs training feeds it. Use it after training (the moving averages lag the final
    weights), after a short fine-tune, or before evaluating a model whose batch-norm
    layers were never trained.

    Only `moving_mean` and `moving_variance` change: kernels, `gamma`/`beta`, other
    layers' state, optimizer and seed-generator state stay bit-identical. An exception
    or `KeyboardInterrupt` part-way restores the moving statistics to their values
    before the call. A model without batch-norm layers gets a warning and an empty
    report. Cost: one forward pass over the data (`"one_pass"`), or D + 1 inference
    passes (`"chain"`, D ≤ the number of batch-norm layers is the depth of the longest
    chain of them); the memory of one batch.

    Args:
        model: a built Keras model (Sequential, Functional, nested or subclassed).
        data: input data: a NumPy array or tensor (or a list/dict of them), an
            `(x, y)` tuple (targets are ignored), a `tf.data.Dataset` or a
            `keras.utils.PyDataset`.
        num_samples: use at most this many samples of `data`; `None` uses all of it
            (an infinite dataset requires it). Defaults to `None`.
        batch_size: split array data into chunks of this many samples (use the
            training batch size); datasets keep their own batches. Defaults to `32`.
        layers: batch-norm layer names or objects to recalibrate; `None` for all of
            them but frozen ones (`trainable=False`, as when fine-tuning: Keras
            normalizes with their moving statistics in training too, so changing them
            changes what the model computes; a warning names them, and naming them here
            recalibrates them, as AdaBN does). Defaults to `None`.
        method: `"one_pass"` (training-mode statistics, one pass) or `"chain"` (the
            inference-consistent fixpoint, D + 1 passes). Defaults to `"one_pass"`.
        variance: `"batch_average"` (the mean of per-batch variances: what training
            normalized by, and what Keras' moving variance tracks) or `"population"`
            (the variance of all samples together). Defaults to `"batch_average"`.
            Batches of one sample give no variance where batch norm reduces over the
            batch axis alone (after a `Dense` layer): `"batch_average"` raises then.
        verbose: `0` silent, `1` one line per pass (the largest mismatch before the
            pass, in the table's units); `"auto"` is `1`. Defaults to
            `"auto"`.

    Returns:
        A `RecalibrationReport` with the mismatch (`bn_mean_shift`, `bn_std_ratio`)
        of each layer before and after.

    ```python
    model.fit(x_train, y_train, epochs=10, batch_size=64)
    report = keras_initkit.recalibrate_batchnorm(
        model, x_train, num_samples=4096, batch_size=64
    )
    print(report)
    ```

    Reference:

    - [Wu & Johnson, 2021. Rethinking "Batch" in BatchNorm](https://arxiv.org/abs/2105.07576)
    """
    validation.model(model)
    verbose = validation.resolve_verbose(validation.verbose(verbose), auto=True)
    validation.one_of(method, "method", METHODS)
    reducer = BatchNormStatistics(variance)
    if not model.built:
        raise ValueError(
            "The model must be built before its batch-norm statistics can be "
            f"recalibrated: call it on a batch. Received: unbuilt model '{model.name}'"
        )
    chosen = resolve_layers(model, layers, where=_is_batchnorm)
    for layer in chosen:
        if not _is_batchnorm(layer):
            raise ValueError(
                "Argument `layers` must name batch-norm layers. "
                f"Received: '{layer.name}' of type {type(layer).__name__}"
            )
    batches, source = _take_samples(data, num_samples, batch_size)
    check_inputs(model, batches)
    frozen = [layer for layer in chosen if not layer.trainable] if layers is None else []
    if frozen:
        chosen = [layer for layer in chosen if layer.trainable]
        names = ", ".join(f"'{layer.name}'" for layer in frozen)
        warnings.warn(
            f"recalibrate_batchnorm leaves {len(frozen)} frozen batch-norm layer(s) as they "
            f"are: {names}. With trainable=False Keras normalizes with their moving "
            "statistics in training too, so changing them changes what the model "
            "computes; name them in `layers=` to recalibrate them as well.",
            stacklevel=2,
        )
        if not chosen:
            return RecalibrationReport([], {}, {}, 0, source)
    calls = shared_layers(model)
    if shared := [layer for layer in chosen if id(layer) in calls]:
        names = ", ".join(f"'{layer.name}' ({calls[id(layer)]} calls)" for layer in shared)
        warnings.warn(
            f"Batch-norm layer(s) called more than once in the model: {names}. Their "
            "statistics are measured on their first call's inputs only (the probe "
            "measures a layer at its first call): the other calls' inputs are not in them.",
            stacklevel=2,
        )
    if not chosen:
        warnings.warn(
            f"Model '{model.name}' has no BatchNormalization layer: nothing to recalibrate.",
            stacklevel=2,
        )
        return RecalibrationReport([], {}, {}, 0, source)
    saved = [
        (
            layer,
            keras.ops.copy(layer.moving_mean),
            keras.ops.copy(layer.moving_variance),
            recalibrated(layer),
        )
        for layer in chosen
    ]
    mode = "training" if method == "one_pass" else "inference"
    probe = cached(Probe, model, [reducer], layers=chosen, mode=mode)
    # A one-sample batch has no variance per channel where batch norm reduces over
    # the batch axis alone (a layer after Dense): each batch's variance is 0.
    single = variance == "batch_average" and all(_samples(x) == 1 for x, _ in batches)
    try:
        run = _one_pass if method == "one_pass" else _chain
        return run(probe, batches, source, verbose, single)
    except BaseException:
        for layer, mean, variance_, count in saved:
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance_)
            set_recalibrated(layer, count)
        raise


def _not_called(sites, passes, source):
    warnings.warn(
        "No batch-norm layer was called in the forward pass: nothing to "
        f"recalibrate. Received: layers {[site.layer.name for site in sites]}",
        stacklevel=4,
    )
    return RecalibrationReport([], {}, {}, passes, source)


def _no_variance(measured, single):
    """Raise where one-sample batches (`single`) gave a layer no variance at all."""
    if not single:
        return
    none = [n for n, v in measured.items() if not np.any(v["bn_input_variance"])]
    if none:
        raise ValueError(
            f"recalibrate_batchnorm(variance='batch_average') averages each batch's "
            f"variance, and a batch of one sample has none in {len(none)} batch-norm "
            f"layer(s) that normalize over the batch axis alone ({', '.join(none[:5])}"
            f"{', ...' if len(none) > 5 else ''}): their moving variance would be 0. "
            "Nothing was changed. Pass batch_size=2 or more (the training batch size), "
            "or variance='population'. Received: batches of 1 sample"
        )


def _one_pass(probe, batches, source, verbose, single=False):
    """One training-mode pass; every layer's pooled input statistics assigned at once.

    "after" is each layer's mismatch against the same statistics once assigned: zero up
    to the float rounding of the stored values.
    """
    result = probe.run_batches(batches, source)
    measured = result.metrics
    if not measured:
        return _not_called(probe.sites, 1, source)
    _no_variance(measured, single)
    sites = {site.name: site for site in probe.sites}
    before = {name: _summary(v) for name, v in measured.items()}
    if verbose:
        print(_progress(1, measured))
    after = {}
    for name, values in measured.items():
        layer = sites[name].layer
        _assign(layer, values["bn_input_mean"], values["bn_input_variance"])
        stats = {
            "input": np.stack([values["bn_input_mean"], values["bn_input_variance"]]),
            "moving_mean": to_numpy(layer.moving_mean),
            "moving_variance": to_numpy(layer.moving_variance),
        }
        after[name] = _summary(BatchNormStatistics().finalize(sites[name], stats))
    order = [site.name for site in result.sites if site.name in measured]
    return RecalibrationReport(order, before, {n: after[n] for n in order}, 1, source)


def _chain(probe, batches, source, verbose, single=False):
    """Measure every layer's input statistics and assign them, pass after pass, until
    no layer is off by more than `TOLERANCE` (at most D + 1 passes)."""
    sites = {site.name: site for site in probe.sites}
    before, passes = None, 0
    while True:
        result = probe.run_batches(batches, source)
        passes += 1
        measured = result.metrics
        if not measured:
            return _not_called(probe.sites, passes, source)
        if before is None:
            _no_variance(measured, single)
            before = {name: _summary(v) for name, v in measured.items()}
        worst = max(_worst(v) for v in measured.values())
        if verbose:
            print(_progress(passes, measured))
        if worst <= TOLERANCE or passes > len(measured):
            break
        for name, values in measured.items():
            # Before the layers ahead of it are calibrated a deep layer's input can
            # overflow (DenseNet121 on 0-255 pixels): it keeps its statistics until then.
            if _finite(values):
                _assign(sites[name].layer, values["bn_input_mean"], values["bn_input_variance"])
    failed = [name for name, values in measured.items() if not _finite(values)]
    if failed:  # the caller restores every layer
        raise ValueError(
            f"recalibrate_batchnorm(method='chain') did not reach finite statistics in "
            f"{passes} passes: in inference mode the inputs of {len(failed)} batch-norm "
            f"layer(s) are not finite ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''}). "
            "Nothing was changed. method='one_pass' measures in training mode, where batch "
            "norm normalizes with the batch's statistics. Received: method='chain'"
        )
    order = [site.name for site in result.sites if site.name in measured]
    after = {name: _summary(measured[name]) for name in order}
    return RecalibrationReport(order, before, after, passes, source)


def _assign(layer, mean, variance):
    layer.moving_mean.assign(keras.ops.convert_to_tensor(mean, layer.moving_mean.dtype))
    layer.moving_variance.assign(keras.ops.convert_to_tensor(variance, layer.moving_variance.dtype))
    set_recalibrated(layer, recalibrated(layer) + 1)

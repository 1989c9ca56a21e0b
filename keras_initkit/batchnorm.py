"""PreciseBN: set batch-norm moving statistics to the exact population statistics.

Exponential moving averages lag behind the weights they describe and mix statistics of
many past weight states, so after training (or after a few steps, or after surgery on a
model) a batch-norm layer's moving mean and variance can be far from the statistics of
the inputs it actually sees at inference. `recalibrate_batchnorm` replaces them by the
exact population statistics over given data (Wu & Johnson 2021).

The algorithm. At inference a batch-norm layer's input depends on the moving statistics
of the batch-norm layers upstream of it, so each layer must be measured with its
upstream layers already recalibrated. Pooling over batches needs every batch before a
layer's statistics are known, so one pass over the data can settle only the layers
whose upstream layers are all settled. Each pass of the probe measures the pooled
input mean and biased variance of every batch-norm layer (the probe's
`BatchNormStatistics`: Keras 3's moving variance tracks the *biased* batch variance)
and assigns them; a pass after which no layer is off by more than `1e-5` (the largest
per-channel `|d|` and `|log r|`) ends it. After pass t every layer with at most t
batch-norm layers on its longest path from the input is exact, so it ends after D + 1
passes, D being that depth (D = number of batch-norm layers for a plain chain, fewer
for parallel branches), and the first and last passes are the report's "before" and
"after" measurements. Cost: D + 1 inference passes over the data, with the memory of
one batch; use `num_samples` to bound it.
"""

import math
import warnings

import keras
import numpy as np

from keras_initkit import validation
from keras_initkit.probe import BatchNormStatistics, Probe, as_batches, check_inputs, resolve_layers
from keras_initkit.probe.data import is_dataset, is_infinite
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
            return "RecalibrationReport: no batch-norm layer; nothing was changed."
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
    """Largest per-channel |d| and |log r| of one layer."""
    return max(float(np.max(np.abs(values["bn_d"]))), float(np.max(np.abs(np.log(values["bn_r"])))))


def _summary(values):
    return {
        "bn_mean_shift": float(values["bn_mean_shift"]),
        "bn_std_ratio": float(values["bn_std_ratio"]),
    }


def recalibrate_batchnorm(
    model, data, num_samples=None, *, batch_size=32, layers=None, verbose="auto"
):
    """Set every batch-norm layer's moving statistics to their exact population values.

    PreciseBN (Wu & Johnson 2021): replaces each `BatchNormalization` layer's
    `moving_mean` and `moving_variance` by the mean and biased variance of the layer's
    input over `data`, pooled exactly over batches, measured with every upstream
    batch-norm layer already recalibrated, so that inference sees exactly the
    statistics it normalizes by. Use it after training (the moving averages lag the
    final weights), after a short fine-tune, or before evaluating a model whose
    batch-norm layers were never trained.

    Only `moving_mean` and `moving_variance` change: kernels, `gamma`/`beta`, other
    layers' state, optimizer and seed-generator state stay bit-identical. An exception
    or `KeyboardInterrupt` part-way restores the moving statistics to their values
    before the call. A model without batch-norm layers gets a warning and an empty
    report. Cost: D + 1 inference passes over the data, where D ≤ the number of
    batch-norm layers is the depth of the longest chain of batch-norm layers; memory of
    one batch.

    Args:
        model: a built Keras model (Sequential, Functional, nested or subclassed).
        data: input data: a NumPy array or tensor (or a list/dict of them), an
            `(x, y)` tuple (targets are ignored), a `tf.data.Dataset` or a
            `keras.utils.PyDataset`.
        num_samples: use at most this many samples of `data`; `None` uses all of it
            (an infinite dataset requires it). Defaults to `None`.
        batch_size: split array data into chunks of this many samples; datasets keep
            their own batches. Defaults to `32`.
        layers: batch-norm layer names or objects to recalibrate; `None` for all of
            them. Defaults to `None`.
        verbose: `0` silent, `1` one line per pass; `"auto"` is `1`. Defaults to
            `"auto"`.

    Returns:
        A `RecalibrationReport` with the mismatch (`bn_mean_shift`, `bn_std_ratio`)
        of each layer before and after.

    ```python
    model.fit(x_train, y_train, epochs=10)
    report = keras_initkit.recalibrate_batchnorm(model, x_train, num_samples=4096)
    print(report)
    ```

    Reference:

    - [Wu & Johnson, 2021. Rethinking "Batch" in BatchNorm](https://arxiv.org/abs/2105.07576)
    """
    verbose = validation.resolve_verbose(validation.verbose(verbose), auto=True)
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
    if not chosen:
        warnings.warn(
            f"Model '{model.name}' has no BatchNormalization layer: nothing to recalibrate.",
            stacklevel=2,
        )
        return RecalibrationReport([], {}, {}, 0, source)
    saved = [
        (layer, keras.ops.copy(layer.moving_mean), keras.ops.copy(layer.moving_variance))
        for layer in chosen
    ]
    try:
        return _chain(
            Probe(model, [BatchNormStatistics()], layers=chosen, mode="inference"),
            batches,
            source,
            verbose,
        )
    except BaseException:
        for layer, mean, variance in saved:
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise


def _chain(probe, batches, source, verbose):
    """Measure every layer's input statistics and assign them, pass after pass, until
    no layer is off by more than `TOLERANCE` (at most D + 1 passes)."""
    sites = {site.name: site for site in probe.sites}
    before, passes = None, 0
    while True:
        result = probe.run_batches(batches, source)
        passes += 1
        measured = result.metrics
        if not measured:
            warnings.warn(
                "No batch-norm layer was called in the forward pass: nothing to "
                f"recalibrate. Received: layers {[site.layer.name for site in sites.values()]}",
                stacklevel=3,
            )
            return RecalibrationReport([], {}, {}, passes, source)
        if before is None:
            before = {name: _summary(v) for name, v in measured.items()}
        worst = max(_worst(v) for v in measured.values())
        if verbose:
            print(f"recalibrate_batchnorm pass {passes}: largest mismatch {worst:.3g}")
        if worst <= TOLERANCE or passes > len(measured):
            break
        for name, values in measured.items():
            _assign(sites[name].layer, values["bn_input_mean"], values["bn_input_variance"])
    order = [site.name for site in result.sites if site.name in measured]
    after = {name: _summary(measured[name]) for name in order}
    return RecalibrationReport(order, before, after, passes, source)


def _assign(layer, mean, variance):
    layer.moving_mean.assign(keras.ops.convert_to_tensor(mean, layer.moving_mean.dtype))
    layer.moving_variance.assign(keras.ops.convert_to_tensor(variance, layer.moving_variance.dtype))

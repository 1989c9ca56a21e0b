"""BatchNormMonitor: do batch-norm moving statistics match the data they normalize?"""

from keras_initkit.callbacks.base import Monitor, check_fraction, check_positive
from keras_initkit.probe import BatchNormStatistics

BN_METRICS = ("bn_mean_shift", "bn_std_ratio", "bn_init_weight")


class BatchNormMonitor(Monitor):
    """Watch batch-norm moving statistics against the statistics of their inputs.

    Training normalizes with batch statistics, inference (and validation) with the
    moving averages. For every `BatchNormalization` layer, with moving mean m, moving
    variance v and the probe data's population mean μ and biased variance s² of the
    layer's *input* (Keras' moving variance is a biased batch variance, so like is
    compared with like), per channel c:

    - `d_c = (m_c − μ_c) / sqrt(s²_c + eps)` and `r_c = sqrt((v_c + eps) / (s²_c + eps))`
      (the d and r of Ioffe's batch renormalization);
    - `bn_mean_shift` = mean over channels of |d_c|;
    - `bn_std_ratio` = exp(max over channels of |log r_c|): the worst factor by which a
      channel's moving std is off, 1.0 for a perfect match;
    - `bn_init_weight` = momentum^updates: the weight the initial value (mean 0,
      variance 1) still has in the moving averages after `updates` training steps
      (counted as the global batch count: the model's optimizer iterations at the
      first fit plus every batch since). Reported for trainable layers only.

    Warns once per layer and fit: at an epoch end, when `bn_mean_shift` exceeds
    `mean_shift_threshold`, `bn_std_ratio` exceeds `std_ratio_threshold` or
    `bn_init_weight` exceeds `init_weight_threshold` (e.g. after 5 steps at momentum
    0.99 the initial value still weighs 95%); and at any update for a layer with
    `trainable=False`, which normalizes with its frozen moving statistics during
    training too (Keras 3 semantics). `bn_mean_shift` and `bn_std_ratio` are added to
    `logs`.

    Args:
        data: the fixed probe set (array, tensor, list/dict of them, `tf.data.Dataset`
            or `keras.utils.PyDataset`).
        log_dir: TensorBoard log directory (summaries go to `<log_dir>/initkit`), or
            `None` for no summaries. Defaults to `None`.
        update_freq: `"epoch"`, or measure every this many batches (and at each epoch
            end). Defaults to `"epoch"`.
        layers: names or layers to watch; `None` for every `BatchNormalization`
            layer. Defaults to `None`.
        histograms: no effect here: histograms sample activation outputs, and
            batch-norm layers have none. Defaults to `False`.
        mean_shift_threshold: warn when `bn_mean_shift` (in input standard
            deviations) is above this. Defaults to `0.5`.
        std_ratio_threshold: warn when `bn_std_ratio` is above this factor (> 1).
            Defaults to `2.0`.
        init_weight_threshold: warn when the initial value's weight in the moving
            statistics is above this, in [0, 1]. Defaults to `0.05`.
        add_to_logs: add `bn_mean_shift/<layer>` and `bn_std_ratio/<layer>` to the
            epoch logs. Defaults to `True`.
        verbose: `1` warns (`InitkitWarning`, one per rule, listing its layers), `0`
            only records `monitor.findings`. Defaults to `1`.
        batch_size: run the probe data in chunks of this many samples. Defaults to
            `None` (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.

    ```python
    monitor = keras_initkit.callbacks.BatchNormMonitor(x_val[:512], log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```

    Reference:
    - [Ioffe, 2017](https://arxiv.org/abs/1702.03275), Batch Renormalization.
    - [Wu & Johnson, 2021](https://arxiv.org/abs/2105.07576), Rethinking "Batch" in
      BatchNorm (PreciseBN).
    """

    log_metrics = ("bn_mean_shift", "bn_std_ratio")
    layout = {"Batch norm": BN_METRICS}

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        mean_shift_threshold=0.5,
        std_ratio_threshold=2.0,
        init_weight_threshold=0.05,
        add_to_logs=True,
        verbose=1,
        batch_size=None,
        max_batches=None,
    ):
        self._configure(
            mean_shift_threshold=mean_shift_threshold,
            std_ratio_threshold=std_ratio_threshold,
            init_weight_threshold=init_weight_threshold,
        )
        super().__init__(
            data,
            log_dir=log_dir,
            update_freq=update_freq,
            layers=layers,
            histograms=histograms,
            add_to_logs=add_to_logs,
            verbose=verbose,
            batch_size=batch_size,
            max_batches=max_batches,
        )

    def _configure(self, mean_shift_threshold, std_ratio_threshold, init_weight_threshold):
        self.mean_shift_threshold = check_positive(mean_shift_threshold, "mean_shift_threshold")
        self.std_ratio_threshold = check_positive(
            std_ratio_threshold, "std_ratio_threshold", above=1.0
        )
        self.init_weight_threshold = check_fraction(init_weight_threshold, "init_weight_threshold")

    def reducers(self):
        return [BatchNormStatistics()]

    def judges(self, site):
        return site.is_batchnorm

    def report(self, site, values, step):
        out = {k: values[k] for k in ("bn_mean_shift", "bn_std_ratio") if k in values}
        if out and site.layer.trainable:
            out["bn_init_weight"] = float(site.layer.momentum) ** step
        return out

    def check(self, site, scalars, step, epoch_end):
        shift, ratio = scalars.get("bn_mean_shift"), scalars.get("bn_std_ratio")
        fix = "run keras_initkit.recalibrate_batchnorm(model, data) before evaluating"
        if not site.layer.trainable and shift is not None:
            yield (
                "frozen",
                "trainable=False, so it normalizes with its frozen moving statistics during "
                f"training as well (bn_mean_shift {shift:.2f}, bn_std_ratio {ratio:.2f} on the "
                "probe data)",
                "intended when fine-tuning; otherwise set trainable=True.",
            )
        if not epoch_end:
            return
        weight = scalars.get("bn_init_weight")
        if weight is not None and weight > self.init_weight_threshold:
            # The mismatch is then mostly the initial value's: one finding, not three.
            momentum = float(site.layer.momentum)
            yield (
                "bn_init_weight",
                f"after {step} updates at momentum {momentum:g}, the initial value still "
                f"weighs {weight:.0%} in the moving statistics that validation and "
                f"inference use (bn_mean_shift {shift:.2f}, bn_std_ratio {ratio:.2f})",
                f"lower `momentum` (e.g. 0.9) or {fix}.",
            )
            return
        if shift is not None and shift > self.mean_shift_threshold:
            yield (
                "bn_mean_shift",
                f"moving mean is off by {shift:.2f} input standard deviations on average "
                "(bn_mean_shift): inference normalizes differently from training",
                f"{fix}.",
            )
        if ratio is not None and ratio > self.std_ratio_threshold:
            yield (
                "bn_std_ratio",
                f"moving standard deviation is off by a factor of up to {ratio:.2f} "
                "(bn_std_ratio): inference normalizes differently from training",
                f"{fix}.",
            )

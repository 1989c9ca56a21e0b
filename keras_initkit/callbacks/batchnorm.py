"""BatchNormMonitor: do batch-norm moving statistics match the data they normalize?"""

from keras_initkit.callbacks.base import Monitor
from keras_initkit.checks.batchnorm import INIT_WEIGHT, MEAN_SHIFT, STD_RATIO, BatchNormCheck


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

    Finds the rules of `keras_initkit.checks.BatchNormCheck`: at an epoch end,
    `bn_init_weight` (e.g. after 5 steps at momentum 0.99 the initial value still
    weighs 95%), else `bn_mean_shift` and `bn_std_ratio`; and at any update `frozen`,
    a layer with `trainable=False`, which normalizes with its frozen moving statistics
    during training too (Keras 3 semantics). `bn_mean_shift` and `bn_std_ratio` are
    added to `logs`.

    Args:
        data: the fixed probe set (see `keras_initkit.callbacks.Monitor`).
        mean_shift_threshold: warn when `bn_mean_shift` (in input standard
            deviations) is above this. Defaults to `0.5`.
        std_ratio_threshold: warn when `bn_std_ratio` is above this factor (> 1).
            Defaults to `2.0`.
        init_weight_threshold: warn when the initial value's weight in the moving
            statistics is above this, in [0, 1]. Defaults to `0.05`.
        **kwargs: the arguments of `keras_initkit.callbacks.Monitor`.

    ```python
    monitor = keras_initkit.callbacks.BatchNormMonitor(x_val[:512], log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```

    Reference:
    - [Ioffe, 2017](https://arxiv.org/abs/1702.03275), Batch Renormalization.
    - [Wu & Johnson, 2021](https://arxiv.org/abs/2105.07576), Rethinking "Batch" in
      BatchNorm (PreciseBN).
    """

    def __init__(
        self,
        data,
        *,
        mean_shift_threshold=MEAN_SHIFT.default,
        std_ratio_threshold=STD_RATIO.default,
        init_weight_threshold=INIT_WEIGHT.default,
        **kwargs,
    ):
        check = BatchNormCheck(
            mean_shift_threshold=mean_shift_threshold,
            std_ratio_threshold=std_ratio_threshold,
            init_weight_threshold=init_weight_threshold,
        )
        super().__init__(data, checks=[check], **kwargs)

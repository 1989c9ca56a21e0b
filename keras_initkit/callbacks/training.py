"""TrainingMonitor: every monitor at once, one probe pass per update."""

from keras_initkit.callbacks.base import Monitor
from keras_initkit.callbacks.batchnorm import BatchNormMonitor
from keras_initkit.callbacks.dead_units import DeadUnitMonitor
from keras_initkit.callbacks.gradient import GradientMonitor
from keras_initkit.callbacks.saturation import SaturationMonitor
from keras_initkit.probe import ActivationMoments


class TrainingMonitor(Monitor):
    """Watch saturation, dead units, batch-norm statistics (and gradients) at once.

    Combines `SaturationMonitor`, `DeadUnitMonitor` and `BatchNormMonitor` (and, with
    `gradients=True`, `GradientMonitor`) in one callback that runs ONE probe pass per
    update with the union of their statistics, and additionally reports
    `activation_mean` and `activation_std` for every layer with a kernel or an
    activation. Each part keeps its own definitions, thresholds, `logs` keys and
    warnings; see those classes. With `gradients=True` each update also runs one
    gradient pass on the probe data (which then needs targets, `(x, y)`).

    Args:
        data: the fixed probe set (array, tensor, list/dict of them, `tf.data.Dataset`
            or `keras.utils.PyDataset`); `(x, y)` when `gradients=True`.
        log_dir: TensorBoard log directory (summaries go to `<log_dir>/initkit`), or
            `None` for no summaries. Defaults to `None`.
        update_freq: `"epoch"`, or measure every this many batches (and at each epoch
            end). Defaults to `"epoch"`.
        layers: names or layers to watch; `None` for every layer some part can judge.
            Defaults to `None`.
        histograms: also write output-value histograms `activations/<layer>`.
            Defaults to `False`.
        delta: saturation margin relative to the activation's range (see
            `SaturationMonitor`). Defaults to `0.01`.
        saturation_threshold: warn above this `saturated_fraction`. Defaults to `0.2`.
        dead_threshold: warn above this `dead_fraction` / `inactive_fraction`.
            Defaults to `0.5`.
        mean_shift_threshold: warn above this `bn_mean_shift`. Defaults to `0.5`.
        std_ratio_threshold: warn above this `bn_std_ratio` (> 1). Defaults to `2.0`.
        init_weight_threshold: warn when the initial value weighs more than this in
            batch-norm moving statistics. Defaults to `0.05`.
        gradients: also measure per-layer gradient norms and update ratios (see
            `GradientMonitor`). Defaults to `False`.
        vanishing_threshold: see `GradientMonitor`. Defaults to `1e-3`.
        exploding_threshold: see `GradientMonitor`. Defaults to `1.0`.
        add_to_logs: add the parts' headline metrics to the epoch logs. Defaults to
            `True`.
        verbose: `1` warns (`InitkitWarning`, one per rule, listing its layers), `0`
            only records `monitor.findings`. Defaults to `1`.
        batch_size: run the probe data in chunks of this many samples. Defaults to
            `None` (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.

    ```python
    monitor = keras_initkit.callbacks.TrainingMonitor(x_val[:512], log_dir="logs")
    model.fit(
        x, y, epochs=10,
        # Keras' TensorBoard first: it copies every logs key it sees into its run.
        callbacks=[keras.callbacks.TensorBoard(log_dir="logs"), monitor],
    )
    # tensorboard --logdir logs: run "initkit", Custom Scalars groups each metric.
    ```
    """

    layout = {"Activations": ("activation_mean", "activation_std")}

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        delta=0.01,
        saturation_threshold=0.2,
        dead_threshold=0.5,
        mean_shift_threshold=0.5,
        std_ratio_threshold=2.0,
        init_weight_threshold=0.05,
        gradients=False,
        vanishing_threshold=1e-3,
        exploding_threshold=1.0,
        add_to_logs=True,
        verbose=1,
        batch_size=None,
        max_batches=None,
    ):
        self._monitors = [
            SaturationMonitor.part(delta=delta, saturation_threshold=saturation_threshold),
            DeadUnitMonitor.part(dead_threshold=dead_threshold),
            BatchNormMonitor.part(
                mean_shift_threshold=mean_shift_threshold,
                std_ratio_threshold=std_ratio_threshold,
                init_weight_threshold=init_weight_threshold,
            ),
        ]
        gradient_part = GradientMonitor.part(
            vanishing_threshold=vanishing_threshold, exploding_threshold=exploding_threshold
        )
        if gradients:
            self._monitors.append(gradient_part)
        self.gradients = bool(gradients)
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

    def _parts(self):
        return [self, *self._monitors]

    def reducers(self):
        return [ActivationMoments()]

    def judges(self, site):
        return site.activation is not None or site.has_kernel

    def report(self, site, values, step):
        return {k: values[k] for k in ("activation_mean", "activation_std") if k in values}

"""TrainingMonitor: every check at once, one probe pass per update."""

from keras_initkit import validation
from keras_initkit.callbacks.base import Monitor
from keras_initkit.checks.activations import (
    DEAD,
    DELTA,
    SATURATED,
    VANISHING_ACTIVATIONS,
    ActivationCheck,
    DeadUnitCheck,
    SaturationCheck,
)
from keras_initkit.checks.attention import COLLAPSED, AttentionCheck
from keras_initkit.checks.batchnorm import INIT_WEIGHT, MEAN_SHIFT, STD_RATIO, BatchNormCheck
from keras_initkit.checks.gradients import EXPLODING, EXPLODING_RATIO, VANISHING, GradientCheck
from keras_initkit.checks.recurrent import CHAOTIC, FORGETFUL, GATES_SATURATED, RecurrentCheck


class TrainingMonitor(Monitor):
    """Watch saturation, dead units, batch-norm statistics, recurrent gates and dynamics,
    attention entropy, activation scale and gradients at once.

    The base `Monitor` with every check of `keras_initkit.checks` that reads
    activations or gradients (the symmetry check reads the weights and is for
    `diagnose`): ONE probe pass per update with the union of their statistics, plus
    `activation_mean` and `activation_std` for every layer with a kernel or an
    activation and the `vanishing_activations` / `exploding_activations` rules on
    them. Each check keeps its definitions, `logs` keys and rules; see
    `SaturationMonitor`, `DeadUnitMonitor`, `BatchNormMonitor` and `GradientMonitor`.
    With `gradients=True` each update also runs one gradient pass on the probe data
    (which then needs targets, `(x, y)`).

    Args:
        data: the fixed probe set (see `keras_initkit.callbacks.Monitor`); `(x, y)`
            when `gradients=True`.
        delta: saturation margin relative to the activation's range (see
            `SaturationMonitor`). Defaults to `0.01`.
        saturation_threshold: warn above this `saturated_fraction`. Defaults to `0.2`.
        dead_threshold: warn above this `dead_fraction` / `inactive_fraction`.
            Defaults to `0.5`.
        mean_shift_threshold: warn above this `bn_mean_shift`. Defaults to `0.5`.
        std_ratio_threshold: warn above this `bn_std_ratio` (> 1). Defaults to `2.0`.
        init_weight_threshold: warn when the initial value weighs more than this in
            batch-norm moving statistics. Defaults to `0.05`.
        activation_std_threshold: warn when a hidden kernel layer's output std is more
            than this factor (> 1) above or below the first one's. Defaults to `100.0`.
        gate_saturation_threshold: warn above this `gate_saturated_fraction` of a
            recurrent layer. Defaults to `0.3`.
        spectral_radius_threshold: warn when a recurrent kernel's spectral radius is
            above this (> 1: chaotic, exploding dynamics). Defaults to `1.5`.
        short_memory_threshold: warn when a SimpleRNN's recurrent spectral radius is
            below this (vanishing memory). Defaults to `0.5`.
        entropy_threshold: warn when an attention layer's lowest-head normalized
            entropy is below this (entropy collapse). Defaults to `0.05`.
        gradients: also measure per-layer gradients (see `GradientMonitor`). Defaults
            to `False`.
        vanishing_threshold: see `GradientMonitor`. Defaults to `1e-3`.
        exploding_threshold: see `GradientMonitor`. Defaults to `1.0`.
        exploding_ratio_threshold: see `GradientMonitor`. Defaults to `1e3`.
        **kwargs: the arguments of `keras_initkit.callbacks.Monitor`.

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

    def __init__(
        self,
        data,
        *,
        delta=DELTA,
        saturation_threshold=SATURATED.default,
        dead_threshold=DEAD.default,
        mean_shift_threshold=MEAN_SHIFT.default,
        std_ratio_threshold=STD_RATIO.default,
        init_weight_threshold=INIT_WEIGHT.default,
        activation_std_threshold=VANISHING_ACTIVATIONS.default,
        gate_saturation_threshold=GATES_SATURATED.default,
        spectral_radius_threshold=CHAOTIC.default,
        short_memory_threshold=FORGETFUL.default,
        entropy_threshold=COLLAPSED.default,
        gradients=False,
        vanishing_threshold=VANISHING.default,
        exploding_threshold=EXPLODING.default,
        exploding_ratio_threshold=EXPLODING_RATIO.default,
        **kwargs,
    ):
        checks = [
            ActivationCheck(activation_std_threshold=activation_std_threshold),
            SaturationCheck(delta=delta, saturation_threshold=saturation_threshold),
            DeadUnitCheck(dead_threshold=dead_threshold),
            BatchNormCheck(
                mean_shift_threshold=mean_shift_threshold,
                std_ratio_threshold=std_ratio_threshold,
                init_weight_threshold=init_weight_threshold,
            ),
            RecurrentCheck(
                delta=delta,
                gate_saturation_threshold=gate_saturation_threshold,
                spectral_radius_threshold=spectral_radius_threshold,
                short_memory_threshold=short_memory_threshold,
            ),
            AttentionCheck(entropy_threshold=entropy_threshold),
        ]
        gradient_check = GradientCheck(  # validated even when unused
            vanishing_threshold=vanishing_threshold,
            exploding_threshold=exploding_threshold,
            exploding_ratio_threshold=exploding_ratio_threshold,
        )
        self.gradients = validation.boolean(gradients, "gradients")
        super().__init__(data, checks=checks + [gradient_check] * self.gradients, **kwargs)

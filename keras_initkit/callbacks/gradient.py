"""GradientMonitor: per-layer gradient flow on the probe batch, without a training step."""

from keras_initkit.callbacks.base import Monitor
from keras_initkit.checks.gradients import EXPLODING, EXPLODING_RATIO, VANISHING, GradientCheck


class GradientMonitor(Monitor):
    """Watch per-layer gradient norms, gradient ratios and update-to-weight ratios.

    For every layer that owns trainable weights, computes on the probe data (which
    must hold targets, `(x, y)`) the gradient of the mean training loss with respect
    to the layer's own weights, as training sees the network, with no optimizer step
    and no change to any variable (`keras_initkit.probe.gradients`):

    - `gradient_norm` = ‖g‖₂ over the layer's weights taken together;
    - `weight_norm` = ‖w‖₂ of the same weights;
    - `update_ratio` = learning rate × ‖g‖ / ‖w‖, the relative size of the optimizer's
      step (rule of thumb: around 1e-3), under SGD only: absent for adaptive optimizers
      (Adam, RMSprop…), whose step does not scale with ‖g‖, and when ‖w‖ = 0;
    - `gradient_ratio` = ‖g‖ / ‖g‖ of the last kernel layer (kernel and recurrent
      layers only; with several output heads, of the heads the layer feeds, the one
      with the largest ‖g‖).

    Finds the rules of `keras_initkit.checks.GradientCheck`, the one definition of
    vanishing and exploding gradients that `diagnose` applies too: **vanishing** when a
    layer's `gradient_ratio` is below `vanishing_threshold` (AutoTrainer's
    first-to-last rule, for every layer); **exploding** when its `update_ratio` is
    above `exploding_threshold` (a step larger than the weights), when its
    `gradient_ratio` is above `exploding_ratio_threshold` (the rule mirrored: under an
    adaptive optimizer, whose step does not scale with ‖g‖, the only size test), or
    when its gradient norm is not finite. `gradient_norm` and `update_ratio` are added
    to `logs`.

    Args:
        data: the fixed probe set with targets: `(x, y)` arrays, or a
            `tf.data.Dataset` / `keras.utils.PyDataset` yielding `(x, y)`.
        vanishing_threshold: warn when a kernel or recurrent layer's gradient norm is
            below this fraction of the last kernel layer's, in [0, 1]. Defaults to
            `1e-3`.
        exploding_threshold: warn when a layer's `update_ratio` is above this.
            Defaults to `1.0`.
        exploding_ratio_threshold: warn when a kernel or recurrent layer's gradient
            norm is above this multiple of the last kernel layer's. Defaults to `1e3`.
        **kwargs: the arguments of `keras_initkit.callbacks.Monitor`.

    ```python
    monitor = keras_initkit.callbacks.GradientMonitor((x_val[:256], y_val[:256]), log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```

    Reference:
    - [Zhang et al., 2021](https://arxiv.org/abs/2102.06878), AutoTrainer: An Automatic
      DNN Training Problem Detection and Repair System.
    """

    def __init__(
        self,
        data,
        *,
        vanishing_threshold=VANISHING.default,
        exploding_threshold=EXPLODING.default,
        exploding_ratio_threshold=EXPLODING_RATIO.default,
        **kwargs,
    ):
        check = GradientCheck(
            vanishing_threshold=vanishing_threshold,
            exploding_threshold=exploding_threshold,
            exploding_ratio_threshold=exploding_ratio_threshold,
        )
        super().__init__(data, checks=[check], **kwargs)

"""DeadUnitMonitor: rectifier units that never fire on the probe data."""

from keras_initkit.callbacks.base import Monitor
from keras_initkit.checks.activations import DEAD, DeadUnitCheck


class DeadUnitMonitor(Monitor):
    """Watch dead units of ReLU-family layers.

    A unit (a channel of the output's last axis, or axis 1 for `channels_first`
    layers and the layers they feed, see `probe.selection.channel_axes`) is **dead** when its output is ≤ 0 for every sample and every spatial
    position of the probe data; `dead_fraction` = dead units / units. A dead ReLU
    unit gets zero gradient and never recovers. For leaky variants (LeakyReLU, ELU,
    SELU, PReLU) the same rule on the sign of the output, which is the sign of the
    pre-activation, is reported as `inactive_fraction`.

    Reported per layer (TensorBoard tag `<metric>/<layer>`): `dead_fraction` or
    `inactive_fraction` (also added to `logs`), `firing_rate` (mean share of positive
    values per unit), `activation_mean` and `activation_std`. Finds the rules
    `dead_fraction` and `inactive_fraction` (`keras_initkit.checks.DeadUnitCheck`).

    Args:
        data: the fixed probe set (see `keras_initkit.callbacks.Monitor`).
        dead_threshold: warn when a layer's dead (or inactive) fraction is above this,
            in [0, 1]. Defaults to `0.5`.
        **kwargs: the arguments of `keras_initkit.callbacks.Monitor`.

    ```python
    model.fit(
        x, y, epochs=10,
        callbacks=[
            keras_initkit.callbacks.DeadUnitMonitor(x_val[:512], log_dir="logs"),
            # The monitor adds dead_fraction/<layer> to the logs before this one reads them.
            keras.callbacks.EarlyStopping(monitor="dead_fraction/dense_3", mode="min"),
        ],
    )
    ```

    Reference:
    - [Lu et al., 2020](https://arxiv.org/abs/1903.06733), Dying ReLU and
      Initialization: Theory and Numerical Examples.
    """

    def __init__(self, data, *, dead_threshold=DEAD.default, **kwargs):
        super().__init__(data, checks=[DeadUnitCheck(dead_threshold=dead_threshold)], **kwargs)

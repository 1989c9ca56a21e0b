"""SaturationMonitor: how much of each bounded activation sits at its asymptotes."""

from keras_initkit.callbacks.base import Monitor
from keras_initkit.checks.activations import DELTA, SATURATED, SaturationCheck


class SaturationMonitor(Monitor):
    """Watch saturated units of bounded activations (sigmoid, tanh, softsign, ...).

    For every layer whose output ends in a bounded activation, measures on the probe
    data the share of output values (over sample × position × unit) that lie within
    `delta` of either asymptote, `delta` relative to the activation's range (so 0.01
    means within 0.02 of ±1 for tanh and within 0.01 of 0 or 1 for sigmoid). Saturated
    units pass almost no gradient: a deep sigmoid or tanh net whose layers saturate at
    initialization does not train (Glorot & Bengio 2010).

    Reported per layer (TensorBoard tag `<metric>/<layer>`; the first one also in
    `logs`): `saturated_fraction`; `saturated_low` and `saturated_high`, its split by
    asymptote; `abs_p98`, the 98th percentile of |a|; and the output's
    `activation_mean` and `activation_std`. Finds the rule `saturated_fraction`
    (`keras_initkit.checks.SaturationCheck`).

    Args:
        data: the fixed probe set (see `keras_initkit.callbacks.Monitor`).
        delta: distance to an asymptote, relative to the activation's range, within
            which a value counts as saturated, in (0, 0.5). Defaults to `0.01`.
        saturation_threshold: warn when a layer's `saturated_fraction` is above this,
            in [0, 1]. Defaults to `0.2`.
        **kwargs: the arguments of `keras_initkit.callbacks.Monitor`.

    ```python
    monitor = keras_initkit.callbacks.SaturationMonitor(x_val[:512], log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```

    Reference:
    - [Glorot & Bengio, 2010](https://proceedings.mlr.press/v9/glorot10a.html),
      Understanding the difficulty of training deep feedforward neural networks.
    """

    def __init__(self, data, *, delta=DELTA, saturation_threshold=SATURATED.default, **kwargs):
        check = SaturationCheck(delta=delta, saturation_threshold=saturation_threshold)
        super().__init__(data, checks=[check], **kwargs)

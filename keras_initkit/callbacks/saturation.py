"""SaturationMonitor: how much of each bounded activation sits at its asymptotes."""

from keras_initkit.callbacks.base import Monitor, check_fraction
from keras_initkit.probe import ActivationMoments, Saturation

SATURATION_METRICS = ("saturated_fraction", "saturated_low", "saturated_high", "abs_p98")


class SaturationMonitor(Monitor):
    """Watch saturated units of bounded activations (sigmoid, tanh, softsign, ...).

    For every layer whose output ends in a bounded activation, measures on the probe
    data the share of output values (over sample × position × unit) that lie within
    `delta` of either asymptote, `delta` relative to the activation's range (so 0.01
    means within 0.02 of ±1 for tanh and within 0.01 of 0 or 1 for sigmoid). Saturated
    units pass almost no gradient: a deep sigmoid or tanh net whose layers saturate at
    initialization does not train (Glorot & Bengio 2010).

    Reported per layer (TensorBoard tag and, for the first one, `logs` key
    `<metric>/<layer>`): `saturated_fraction`; `saturated_low` and `saturated_high`,
    its split by asymptote; `abs_p98`, the 98th percentile of |a|; and the output's
    `activation_mean` and `activation_std`. Warns once per layer and fit when
    `saturated_fraction` exceeds `saturation_threshold`.

    Args:
        data: the fixed probe set (array, tensor, list/dict of them, `tf.data.Dataset`
            or `keras.utils.PyDataset`).
        log_dir: TensorBoard log directory (summaries go to `<log_dir>/initkit`), or
            `None` for no summaries. Defaults to `None`.
        update_freq: `"epoch"`, or measure every this many batches (and at each epoch
            end). Defaults to `"epoch"`.
        layers: names or layers to watch; `None` for every bounded-activation layer.
            Defaults to `None`.
        histograms: also write output-value histograms `activations/<layer>`.
            Defaults to `False`.
        delta: distance to an asymptote, relative to the activation's range, within
            which a value counts as saturated. Defaults to `0.01`.
        saturation_threshold: warn when a layer's `saturated_fraction` is above this.
            Defaults to `0.2`.
        add_to_logs: add `saturated_fraction/<layer>` to the epoch logs. Defaults to
            `True`.
        verbose: `1` warns (`InitkitWarning`, one per rule, listing its layers), `0`
            only records `monitor.findings`. Defaults to `1`.
        batch_size: run the probe data in chunks of this many samples. Defaults to
            `None` (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.

    ```python
    monitor = keras_initkit.callbacks.SaturationMonitor(x_val[:512], log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```

    Reference:
    - [Glorot & Bengio, 2010](https://proceedings.mlr.press/v9/glorot10a.html),
      Understanding the difficulty of training deep feedforward neural networks.
    """

    log_metrics = ("saturated_fraction",)
    layout = {
        "Saturation": SATURATION_METRICS,
        "Activations": ("activation_mean", "activation_std"),
    }

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        delta=0.01,
        saturation_threshold=0.2,
        add_to_logs=True,
        verbose=1,
        batch_size=None,
        max_batches=None,
    ):
        self._configure(delta=delta, saturation_threshold=saturation_threshold)
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

    def _configure(self, delta, saturation_threshold):
        delta = check_fraction(delta, "delta")
        if not 0 < delta < 0.5:
            raise ValueError(f"Argument `delta` must be in (0, 0.5). Received: delta={delta!r}")
        self.delta = delta
        self.saturation_threshold = check_fraction(saturation_threshold, "saturation_threshold")

    def reducers(self):
        return [ActivationMoments(), Saturation(self.delta)]

    def judges(self, site):
        return site.kind == "bounded"

    def report(self, site, values, step):
        keys = SATURATION_METRICS + ("activation_mean", "activation_std")
        return {k: values[k] for k in keys if k in values}

    def check(self, site, scalars, step, epoch_end):
        fraction = scalars.get("saturated_fraction")
        if fraction is not None and fraction > self.saturation_threshold:
            low, high = site.bounds
            yield (
                "saturated_fraction",
                f"{fraction:.0%} of {site.activation} outputs saturated (within "
                f"{self.delta:g} × range of {low:g} or {high:g}; {scalars['saturated_low']:.0%}"
                f" low, {scalars['saturated_high']:.0%} high)",
                "try Glorot or LSUV initialization (keras_initkit.lsuv_init), normalized "
                "inputs, or a lower learning rate.",
            )

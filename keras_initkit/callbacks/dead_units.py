"""DeadUnitMonitor: rectifier units that never fire on the probe data."""

from keras_initkit.callbacks.base import Monitor, check_fraction
from keras_initkit.probe import ActivationMoments, DeadUnits

DEAD_METRICS = ("dead_fraction", "inactive_fraction", "firing_rate")


class DeadUnitMonitor(Monitor):
    """Watch dead units of ReLU-family layers.

    A unit (a channel of the output's last axis, or axis 1 for `channels_first`
    layers) is **dead** when its output is ≤ 0 for every sample and every spatial
    position of the probe data; `dead_fraction` = dead units / units. A dead ReLU
    unit gets zero gradient and never recovers. For leaky variants (LeakyReLU, ELU,
    SELU, PReLU) the same rule on the sign of the output, which is the sign of the
    pre-activation, is reported as `inactive_fraction`.

    Reported per layer (TensorBoard tag `<metric>/<layer>`): `dead_fraction` or
    `inactive_fraction` (also added to `logs`), `firing_rate` (mean share of positive
    values per unit), `activation_mean` and `activation_std`. Warns once per layer and
    fit when the dead (inactive) fraction exceeds `dead_threshold`.

    Args:
        data: the fixed probe set (array, tensor, list/dict of them, `tf.data.Dataset`
            or `keras.utils.PyDataset`).
        log_dir: TensorBoard log directory (summaries go to `<log_dir>/initkit`), or
            `None` for no summaries. Defaults to `None`.
        update_freq: `"epoch"`, or measure every this many batches (and at each epoch
            end). Defaults to `"epoch"`.
        layers: names or layers to watch; `None` for every rectifier layer. Defaults
            to `None`.
        histograms: also write output-value histograms `activations/<layer>`.
            Defaults to `False`.
        dead_threshold: warn when a layer's dead (or inactive) fraction is above this.
            Defaults to `0.5`.
        add_to_logs: add `dead_fraction/<layer>` (`inactive_fraction/<layer>`) to the
            epoch logs. Defaults to `True`.
        verbose: `1` warns (`InitkitWarning`, one per rule, listing its layers), `0`
            only records `monitor.findings`. Defaults to `1`.
        batch_size: run the probe data in chunks of this many samples. Defaults to
            `None` (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.

    ```python
    monitor = keras_initkit.callbacks.DeadUnitMonitor(x_val[:512], log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```

    Reference:
    - [Lu et al., 2020](https://arxiv.org/abs/1903.06733), Dying ReLU and
      Initialization: Theory and Numerical Examples.
    """

    log_metrics = ("dead_fraction", "inactive_fraction")
    layout = {
        "Dead units": DEAD_METRICS,
        "Activations": ("activation_mean", "activation_std"),
    }

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        dead_threshold=0.5,
        add_to_logs=True,
        verbose=1,
        batch_size=None,
        max_batches=None,
    ):
        self._configure(dead_threshold=dead_threshold)
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

    def _configure(self, dead_threshold):
        self.dead_threshold = check_fraction(dead_threshold, "dead_threshold")
        self._units = {}

    def reducers(self):
        return [ActivationMoments(), DeadUnits()]

    def judges(self, site):
        return site.kind in ("dead", "inactive")

    def report(self, site, values, step):
        if "unit_firing_rate" in values:
            self._units[site.name] = len(values["unit_firing_rate"])
        keys = DEAD_METRICS + ("activation_mean", "activation_std")
        return {k: values[k] for k in keys if k in values}

    def check(self, site, scalars, step, epoch_end):
        metric = f"{site.kind}_fraction"
        fraction = scalars.get(metric)
        if fraction is not None and fraction > self.dead_threshold:
            units = self._units.get(site.name)
            what = "dead" if site.kind == "dead" else "inactive (never positive)"
            count = f" ({round(fraction * units)} of {units})" if units else ""
            yield (
                metric,
                f"{fraction:.0%} of units {what}{count}",
                "try He or LSUV initialization (keras_initkit.lsuv_init), a leaky "
                "activation, or a lower learning rate.",
            )

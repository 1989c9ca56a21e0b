"""GradientMonitor: per-layer gradient flow on the probe batch, without a training step."""

import math

from keras_initkit.callbacks.base import Monitor, check_fraction, check_positive

GRADIENT_METRICS = ("gradient_norm", "update_ratio", "weight_norm")


class GradientMonitor(Monitor):
    """Watch per-layer gradient norms and update-to-weight ratios.

    For every layer that owns trainable weights, computes on the probe data (which
    must hold targets, `(x, y)`) the gradient of the mean training loss with respect
    to the layer's own weights, with `training=False` semantics, no optimizer step
    and no change to any variable (`keras_initkit.probe.gradients`):

    - `gradient_norm` = ‖g‖₂ over the layer's weights taken together;
    - `weight_norm` = ‖w‖₂ of the same weights;
    - `update_ratio` = learning rate × ‖g‖ / ‖w‖, the relative size of the step plain
      SGD would take (rule of thumb: around 1e-3). Absent when ‖w‖ = 0.

    Warns once per layer and fit when the gradient **vanishes**: the layer's relative
    gradient ‖g‖/‖w‖ is below `vanishing_threshold` times the largest relative
    gradient among the watched layers; or **explodes**: its gradient norm is not
    finite or its `update_ratio` is above `exploding_threshold`. `gradient_norm` and
    `update_ratio` are added to `logs`.

    Args:
        data: the fixed probe set with targets: `(x, y)` arrays, or a
            `tf.data.Dataset` / `keras.utils.PyDataset` yielding `(x, y)`.
        log_dir: TensorBoard log directory (summaries go to `<log_dir>/initkit`), or
            `None` for no summaries. Defaults to `None`.
        update_freq: `"epoch"`, or measure every this many batches (and at each epoch
            end). Defaults to `"epoch"`.
        layers: names or layers to watch; `None` for every layer with its own
            trainable weights. Defaults to `None`.
        histograms: unused by this monitor (gradients have no histograms). Defaults
            to `False`.
        vanishing_threshold: warn when a layer's ‖g‖/‖w‖ is below this fraction of
            the largest among the watched layers, in [0, 1]. Defaults to `1e-3`.
        exploding_threshold: warn when a layer's `update_ratio` is above this.
            Defaults to `1.0`.
        add_to_logs: add `gradient_norm/<layer>` and `update_ratio/<layer>` to the
            epoch logs. Defaults to `True`.
        verbose: `1` warns (`InitkitWarning`, one per rule, listing its layers), `0`
            only records `monitor.findings`. Defaults to `1`.
        batch_size: run the probe data in chunks of this many samples. Defaults to
            `None` (all at once).
        max_batches: use at most this many batches of a dataset. Defaults to `None`.

    ```python
    monitor = keras_initkit.callbacks.GradientMonitor((x_val[:256], y_val[:256]), log_dir="logs")
    model.fit(x, y, epochs=10, callbacks=[monitor])
    ```
    """

    log_metrics = ("gradient_norm", "update_ratio")
    layout = {"Gradients": GRADIENT_METRICS}
    needs_gradients = True

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        vanishing_threshold=1e-3,
        exploding_threshold=1.0,
        add_to_logs=True,
        verbose=1,
        batch_size=None,
        max_batches=None,
    ):
        self._configure(
            vanishing_threshold=vanishing_threshold, exploding_threshold=exploding_threshold
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

    def _configure(self, vanishing_threshold, exploding_threshold):
        self.vanishing_threshold = check_fraction(vanishing_threshold, "vanishing_threshold")
        self.exploding_threshold = check_positive(exploding_threshold, "exploding_threshold")
        self._relative = {}

    def report(self, site, values, step):
        g, w = values.get("gradient_norm"), values.get("weight_norm")
        if g is not None and w:
            self._relative[site.name] = g / w
        return {k: values[k] for k in GRADIENT_METRICS if k in values}

    def check(self, site, scalars, step, epoch_end):
        g, ratio = scalars.get("gradient_norm"), scalars.get("update_ratio")
        if g is not None and not math.isfinite(g):
            yield ("exploding", f"gradient norm is {g}", "lower the learning rate, clip gradients.")
            return
        if ratio is not None and ratio > self.exploding_threshold:
            yield (
                "exploding",
                f"update_ratio {ratio:.3g}: one SGD step would change the weights by "
                f"{ratio:.0%} of their norm (gradient_norm {g:.3g}): exploding gradients",
                "lower the learning rate, clip gradients, or use a scaled initialization.",
            )
        relative = self._relative.get(site.name)
        finite = [r for r in self._relative.values() if math.isfinite(r)]
        if relative is not None and finite and max(finite) > 0:
            share = relative / max(finite)
            if share < self.vanishing_threshold:
                yield (
                    "vanishing",
                    f"relative gradient ‖g‖/‖w‖ = {relative:.3g} is {share:.1e} of the "
                    "largest layer's: vanishing gradients",
                    "try He/orthogonal or LSUV initialization (keras_initkit.lsuv_init), "
                    "batch normalization, or residual connections.",
                )

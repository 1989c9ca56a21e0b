"""`Monitor`: the base of the training monitors, written once.

A monitor is a list of checks (`keras_initkit.checks`): what to measure on which
layers and the rules that judge it. The base does the rest: scheduling updates,
running the checks' probes (`Measurement`), writing TensorBoard summaries (`Sink`),
adding values to the epoch `logs`, and recording and warning findings once per layer,
rule and fit.
"""

import math

import keras

from keras_initkit import _keras_private, summary, validation
from keras_initkit.callbacks.measurement import HookCheck, Measurement, on_device
from keras_initkit.callbacks.sink import Sink
from keras_initkit.callbacks.warning import RuleWarnings, warn
from keras_initkit.checks import Finding, judge, message
from keras_initkit.checks.book import (
    epoch_end_metrics,
    exempt_layers,
    judged_from,
    metric_limits,
)
from keras_initkit.probe import as_batches, build_on
from keras_initkit.probe.engine import variable_key

# Custom Scalars categories, in display order.
# Per-layer values `add_to_logs="auto"` adds to the epoch logs; beyond, each metric's
# worst (Keras' progress bar prints every value of the logs).
LOGGED_LAYER_VALUES = 20

CATEGORIES = (
    "Saturation",
    "Dead units",
    "Batch norm",
    "Recurrent",
    "Attention",
    "Gradients",
    "Activations",
)


def _record(check, site, rule, value, observation, step):
    """A finding as the dashboard's record (`keras_initkit.summary.write_findings`).

    `threshold` is the limit `value` crossed: a value below it marks a lower-is-worse
    rule, the side the dashboard and `keras-initkit report` take a group's worst value
    from. A rule that compares layers with each other (`per_value=False`: the depth
    rules, a ratio to the first layer's std below 1/`activation_std_ratio` or above it)
    records that bound of its ratio, and no `metric` (its value is not one logged), but
    `shown_in`: the logged metric whose heatmap shows the layer (the depth rules'
    `activation_std`), where the dashboard opens.
    """
    limit = check.limit(rule)
    crossed = limit
    if limit is None and rule.threshold and (bound := check.thresholds.get(rule.threshold)):
        crossed = 1 / bound if rule.below else bound
    record = {
        "rule": rule.name,
        "kind": rule.kind,
        "layer": site.name,
        "step": step,
        "value": value,
        "message": observation,
        "fix": rule.fix or None,
        "metric": None if limit is None else rule.metric,
        "threshold": crossed,
        "shown_in": rule.metric if limit is None else None,
    }
    return {key: v for key, v in record.items() if v is not None}


class Monitor(keras.callbacks.Callback):
    """Base class of the training monitors: probe a fixed batch, report, warn.

    At every train begin (the first one also validates the probe data against the
    model), every `update_freq` batches and at every epoch end, the monitor runs its
    model on the probe data as training sees it (batch norm with the batch's statistics,
    dropout off, every state update discarded), computes each watched layer's
    statistics on device, and brings them to the host in one transfer. It then
    writes them to TensorBoard as `<metric>/<layer>` in the run `<log_dir>/initkit`,
    adds the headline metrics to the epoch `logs` as `<metric>/<layer>`, and records a
    `Finding` once per layer, rule and fit when a rule of its checks fires, with one
    `InitkitWarning` per rule listing the layers (pointing at the user's `fit` line).
    Training is never changed: no weight, batch-norm statistic, optimizer or random
    state moves.

    The built-in monitors are this base with checks from `keras_initkit.checks`
    (`TrainingMonitor` with all of them); they take their own thresholds and pass
    `**kwargs` here. A custom monitor overrides the hooks `reducers`, `judges`, `report`
    and `check`, and sets the class attributes `log_metrics` (the metrics added to
    `logs`), `layout` (`{Custom Scalars category: [metric, ...]}`) and, for gradients,
    `needs_gradients` (see docs/monitors.md, "Writing a monitor").

    Args:
        data: the fixed probe set: a NumPy array or tensor, a list or dict of them for
            multi-input models, a `tf.data.Dataset` or a `keras.utils.PyDataset`
            (tuples are read as `(x, y)`; gradient checks need the `y`). A few hundred
            samples are plenty. Validated and copied once, at construction.
        log_dir: TensorBoard log directory; summaries go to `<log_dir>/initkit`.
            `None` writes no summaries (logs and warnings still work). In a
            multi-worker job only the chief writes (`TF_CONFIG`'s chief, or worker 0
            without one). Defaults to `None`.
        update_freq: `"epoch"` to measure at the end of each epoch, `"batch"` after
            every batch (as `keras.callbacks.TensorBoard`), or an int `N` to measure
            every `N` training batches (counted globally, across fits) and at the end
            of each epoch. Defaults to `"epoch"`.
        layers: layer names or layer objects to watch; `None` watches every layer the
            monitor can judge. Layers it cannot judge are skipped with a warning.
            Defaults to `None`.
        histograms: also write a 1024-value sample of the output of each watched layer
            that ends in a bounded or rectifier activation, as the histogram
            `activations/<layer>`. A monitor that watches no such layer (batch norm,
            gradients) rejects `True`. Defaults to `False`.
        add_to_logs: add the headline metrics to the epoch `logs` (so `History`,
            `CSVLogger` and `EarlyStopping` placed after this callback see them; place
            `keras.callbacks.TensorBoard` before it, or it copies them into its run):
            `True` every layer's value as `<metric>/<layer>`; `"auto"` the same up to
            20 values, beyond that each metric's worst over the layers as
            `<metric>/max` (`<metric>/min` where lower is worse, both where either
            is), which keeps Keras' progress bar readable on a ResNet (hundreds);
            `False` none. Defaults to `"auto"`.
        verbose: `1` or `"auto"` warn like a diagnosis: one `InitkitWarning` per rule
            when it first fires in a fit (its layers as ranges in forward order, the
            worst value, the fix), and again only when it spreads to 25% more layers or
            its worst value worsens 1.5-fold, at most once per epoch per rule; `0` only
            records findings in `monitor.findings` (each layer and rule once per fit).
            Warnings about the monitor's own setup are always issued. Defaults to
            `"auto"`.
        batch_size: run array probe data through the model in chunks of this many
            samples; `None` runs it at once. Defaults to `None`.
        max_batches: use at most this many batches of a dataset. Defaults to `None`
            (all; an infinite dataset needs it).
        checks: the `keras_initkit.checks.Check`s to run. Defaults to none.

    ```python
    checks = [keras_initkit.checks.SaturationCheck(), keras_initkit.checks.GradientCheck()]
    monitor = keras_initkit.callbacks.Monitor((x[:256], y[:256]), log_dir="logs", checks=checks)
    model.fit(x, y, callbacks=[monitor])
    ```
    """

    log_metrics = ()
    layout = {}
    needs_gradients = False

    def __init__(
        self,
        data,
        log_dir=None,
        update_freq="epoch",
        layers=None,
        histograms=False,
        add_to_logs="auto",
        verbose="auto",
        batch_size=None,
        max_batches=None,
        *,
        checks=(),
    ):
        super().__init__()
        if update_freq == "batch":  # as in keras.callbacks.TensorBoard: every batch
            update_freq = 1
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                'Argument `update_freq` must be "epoch", "batch" or a positive int (a number '
                f"of batches). Received: update_freq={update_freq!r}"
            )
        self.log_dir = summary.check_log_dir(log_dir)
        self.update_freq = update_freq
        self.layers = validation.layers(layers)
        self.histograms = validation.boolean(histograms, "histograms")
        self.add_to_logs = validation.boolean_or_auto(add_to_logs, "add_to_logs")
        self.verbose = validation.verbose(verbose)
        self.batch_size = validation.positive_int(batch_size, "batch_size")
        self.max_batches = max_batches
        self.checks = list(checks)
        hooks = HookCheck(self, samples=type(self).judges is not Monitor.judges)
        self._parts = [*self.checks, hooks]  # the checks, and a custom monitor's hooks
        if self.histograms and not any(c.samples for c in self._parts):
            raise ValueError(
                f"Argument `histograms` has no effect on {type(self).__name__}: it samples "
                "layers ending in a bounded or rectifier activation, which it does not watch. "
                "Received: histograms=True"
            )
        self._batches, self.source = as_batches(
            data, batch_size=batch_size, max_batches=max_batches, argument="data"
        )
        if any(c.gradients for c in self._parts):
            for i, (_, y) in enumerate(self._batches):
                if y is None:
                    raise ValueError(
                        "Gradients need targets: `data` must give `(x, y)` pairs. "
                        f"Received: no targets in batch {i} ({self.source})"
                    )
        self._sink = Sink(self.log_dir, type(self).__name__)
        self._tensors = None  # device copies of the probe batches, made once
        self._measurement = None
        self._step = None  # global batch count; continues across fits
        self._epoch_start = 0
        self._last_update = None
        self._warned = set()
        self._warnings = RuleWarnings()
        self._epochs = 0  # epochs begun in this fit
        self._records = []  # the findings as dashboard records, across fits
        self._records_written = None  # none yet: the first update records even no findings
        self._meta_written = None  # what the last layers record said, per fit
        self._told_logged = False  # said once that the logs hold the worst values only
        self._exempt = {}  # what the rules exempted at the last update, across fits
        self._left = {}  # {side: {metric: {layer: step}}}: left an exemption at that step
        self._epoch_ends = []  # the global steps the epoch-end rules judged at
        self.latest = {}
        self.findings = []

    # -- hooks a custom monitor overrides -----------------------------------------------

    def reducers(self):
        """The probe `Reducer`s this monitor's hooks need."""
        return []

    def judges(self, site):
        """Whether the hooks report on `site` (a `keras_initkit.probe.Site`)."""
        return False

    def report(self, site, values, step):
        """`{metric: float}` to report for `site`, from the probe's `values`."""
        return {}

    def check(self, site, scalars, step, epoch_end):
        """`(rule, observation, fix)` findings for `site`, from its `scalars`.

        `observation` says what was measured ("92% of units dead"), `fix` what to
        try; findings of several layers that share a rule and fix are warned together,
        the fix once. `(rule, message)` pairs are accepted too. Messages are prefixed
        with the layer's name and the `step` (global batch count). `epoch_end` is
        True for the measurement at the end of an epoch.
        """
        return ()

    # -- measuring, judging -------------------------------------------------------------

    def _setup(self):
        """Build the probes for `self.model` (once per model and trainable set)."""
        measurement = self._measurement
        if measurement is not None and measurement.model is self.model:
            if measurement.variables == variable_key(self.model):
                return  # else layers were frozen or unfrozen since: new probes
        # Keras' TensorFlow fit builds a subclassed model in its first step, after
        # `on_train_begin` (JAX and torch build it before): the gradient probe needs its
        # variables now.
        build_on(self.model, self._batches[0][0], argument="data")
        measurement = Measurement(self.model, self._parts, self.layers, self.histograms)
        name = type(self).__name__
        for site in measurement.skipped:
            warn(
                f"{name} cannot judge layer '{site.name}' (activation: "
                f"{site.activation or 'linear'}); it is skipped."
            )
        if measurement.empty:
            warn(f"{name} found no layer it can judge in model '{self.model.name}'.")
        self._measurement = measurement
        self._exempt, self._left, self._epoch_ends = {}, {}, []
        if self._tensors is None:
            self._tensors = on_device(self._batches)

    def _update(self, epoch_end):
        _keras_private.sync_jax_state(self.model)
        try:
            scalars, histograms = self._measurement.run(self._tensors, self.source, self._step)
        except Exception:
            if not self._measurement.validated:
                self._measurement = None  # built again at the next train begin
            raise
        self.latest, self._last_update = scalars, self._step
        tags = {f"{m}/{site}": v for site, metrics in scalars.items() for m, v in metrics.items()}
        self._sink.write(self._step, tags, histograms or None)
        self._write_meta()
        self._judge(epoch_end)

    def _judge(self, epoch_end):
        """Record each layer's new findings once per fit; warn per rule (`RuleWarnings`)."""
        current, fixes, below = [], {}, set()
        assignment = self._measurement.assignment
        for check, site, rule, value, observation in judge(
            assignment, self.latest, self._step, epoch_end
        ):
            text = message(site.name, observation, rule.fix, self._step)
            found = Finding(site.name, rule.name, value, self._step, text, observation, rule.fix)
            current.append(found)
            fixes[rule.name] = rule.fix
            if rule.below:
                below.add(rule.name)
            if (site.name, rule.name) not in self._warned:
                self._warned.add((site.name, rule.name))
                self.findings.append(found)
                self._records.append(_record(check, site, rule, value, observation, self._step))
        if validation.resolve_verbose(self.verbose, auto=True):
            order = self._measurement.layer_names
            for text in self._warnings.texts(
                current, self._step, self._epochs, order, fixes, below, self.latest
            ):
                warn(text)

    def _write_meta(self):
        """The layers in forward order, the per-value thresholds and where they apply,
        for the dashboard: at the first update of a fit, and again when what the rules
        exempt changed, and at each epoch end (the steps the epoch-end rules judge at).
        A layer that left an exemption (a residual branch whose LayerScale grew past
        0.1) is judged from the step it left on, on that side of the threshold only:
        the values logged while it was exempt stay unjudged (`exempt_until`)."""
        assignment = self._measurement.assignment
        exempt, since = exempt_layers(assignment), judged_from(assignment)
        for side, by_metric in self._exempt.items():
            for metric, names in by_metric.items():
                now = exempt.get(side, {}).get(metric, ())
                for name in names:
                    if name not in now:
                        left = self._left.setdefault(side, {}).setdefault(metric, {})
                        left.setdefault(name, self._step)
        self._exempt = exempt
        until = {  # a copy: compared with the next update's
            side: {metric: dict(left) for metric, left in by_metric.items()}
            for side, by_metric in self._left.items()
        }
        ends = {"metrics": epoch_end_metrics(self._parts), "steps": list(self._epoch_ends)}
        if (exempt, until, since, ends) == self._meta_written:
            return
        self._meta_written = (exempt, until, since, ends)
        upper, lower = metric_limits(self._parts)
        names = self._measurement.layer_names
        self._sink.write_meta(
            self._step,
            names,
            upper,
            lower,
            exempt=exempt,
            exempt_until=until,
            judged_from=since,
            epoch_ends=ends,
        )

    def _write_records(self):
        """The findings record for the dashboard, when new findings arrived, and once at
        the first update: a run with no findings then says so, instead of leaving the
        dashboard and `keras-initkit report` to derive findings from the thresholds (which
        would judge layers the monitor's checks leave out)."""
        if len(self._records) != self._records_written:
            self._sink.write_findings(self._step, list(self._records))
            self._records_written = len(self._records)

    def _layout(self):
        """The Custom Scalars layout of the metrics measured."""
        present = {m for metrics in self.latest.values() for m in metrics}
        layout = {}
        for check in self._parts:
            for category, metrics in check.layout.items():
                chosen = layout.setdefault(category, [])
                chosen.extend(m for m in metrics if m in present and m not in chosen)
        return {c: layout[c] for c in CATEGORIES if layout.get(c)}

    # -- Keras callback interface -------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._warned = set()
        self._warnings = RuleWarnings()
        self._epochs = 0
        self.findings = []
        self._sink.open()
        if self._step is None:
            self._step = _keras_private.optimizer_steps(self.model)
        self._setup()
        self._measurement.plan(self._planned_updates() * len(self._tensors))
        # Measured at every train begin, also when no step was taken since the last
        # update: the weights may have changed in between (load_weights, lsuv_init).
        self._meta_written = None  # each fit's event file gets the layers record
        self._update(epoch_end=False)  # the first one validates the data against the model

    def _planned_updates(self):
        """How many updates this fit will make (unknown length: very many); a monitor
        that updates more often than a trace costs compiles its probes at once."""
        params = self.params or {}
        epochs, steps = params.get("epochs") or 1, params.get("steps")
        if self.update_freq == "epoch":
            return epochs + 1
        if steps is None:
            return 2**31
        return epochs * steps // self.update_freq + epochs + 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._step
        self._epochs += 1

    @property
    def async_safe(self):
        """Whether Keras may run this callback's batch hooks on a worker thread.

        Keras syncs with the device after every training step (to turn the logs
        into floats) when any callback has a batch hook that is not async-safe. An
        `"epoch"` monitor's batch hook only counts batches, so it allows the
        asynchronous path: the monitor then costs nothing between its updates. A
        monitor that measures every N batches must run in step with training.
        """
        return self.update_freq == "epoch"

    def on_train_batch_end(self, batch, logs=None):
        # `max`: asynchronous hooks (see `async_safe`) may run out of order.
        self._step = max(self._step, self._epoch_start + batch + 1)
        if self.update_freq != "epoch" and self._step % self.update_freq == 0:
            self._update(epoch_end=False)

    def on_epoch_end(self, epoch, logs=None):
        if self._step not in self._epoch_ends:
            self._epoch_ends.append(self._step)
        if self._last_update != self._step:
            self._update(epoch_end=True)
        else:
            self._write_meta()
            self._judge(epoch_end=True)
        if self.add_to_logs and logs is not None:
            logs.update(self._logged())
        self._write_records()
        self._sink.flush(self._step, self._layout())

    def _logged(self):
        """The values `add_to_logs` adds to the epoch logs (see its description)."""
        wanted = {m for check in self._parts for m in check.log_metrics}
        per_layer, by_metric = {}, {}
        for site, metrics in self.latest.items():
            for m, v in metrics.items():
                if m in wanted:
                    per_layer[f"{m}/{site}"] = v
                    by_metric.setdefault(m, []).append(v)
        if self.add_to_logs is True or len(per_layer) <= LOGGED_LAYER_VALUES:
            return per_layer
        upper, lower = metric_limits(self._parts)
        out = {}
        for m, values in by_metric.items():
            broken = [v for v in values if not math.isfinite(v)]  # NaN or inf: the worst
            if m in upper or m not in lower:
                out[f"{m}/max"] = broken[0] if broken else max(values)
            if m in lower:
                out[f"{m}/min"] = broken[0] if broken else min(values)
        # Said where Keras prints the logs (its progress bar: `fit(verbose=0)` has none).
        shown = (self.params or {}).get("verbose", 1) != 0
        if shown and not self._told_logged and validation.resolve_verbose(self.verbose, auto=True):
            self._told_logged = True
            print(
                f"{type(self).__name__}: the epoch logs hold each metric's worst layer "
                f"({', '.join(out)}), not its {len(per_layer)} per-layer values; "
                "add_to_logs=True adds those."
            )
        return out

    def on_train_end(self, logs=None):
        self._write_records()
        self._sink.close(self._step, self._layout())

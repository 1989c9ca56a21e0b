"""A monitor's probes on one model: built once, run at every update."""

import keras

from keras_initkit.checks import Check, Rule, assign, measure, reducers
from keras_initkit.probe import (
    ActivationSample,
    DataMismatch,
    Probe,
    check_inputs,
    error_summary,
    make_sites,
    resolve_layers,
)
from keras_initkit.probe.engine import variable_key
from keras_initkit.probe.gradients import GradientProbe
from keras_initkit.probe.selection import interleave

HISTOGRAM_SAMPLES = 1024


class HookCheck(Check):
    """A monitor's own hooks (what a custom monitor overrides), run as one more check."""

    def __init__(self, monitor, samples=False):
        super().__init__()
        self.monitor = monitor
        self.gradients = monitor.needs_gradients
        self.samples = samples
        self.log_metrics, self.layout = monitor.log_metrics, monitor.layout

    def reducers(self):
        return self.monitor.reducers()

    def applies(self, site):
        return self.monitor.judges(site)

    def report(self, site, values, step):
        return self.monitor.report(site, values, step)

    def findings(self, sites, scalars, step, epoch_end=True):
        for site in sites:
            values = scalars.get(site.name)
            found = self.monitor.check(site, values, step, epoch_end) if values else ()
            for name, observation, *fix in found:
                yield (
                    site,
                    Rule(name, name, "", "", observation, fix[0] if fix else ""),
                    None,
                    observation,
                )


def on_device(batches):
    """Device copies of host `(x, y)` batches, made once per monitor."""
    convert = keras.ops.convert_to_tensor
    return [
        (
            keras.tree.map_structure(convert, x),
            None if y is None else keras.tree.map_structure(convert, y),
        )
        for x, y in batches
    ]


class Measurement:
    """ONE forward probe with the union of the checks' reducers (and one gradient
    probe for the gradient checks): one compiled pass and one host transfer each.

    Args:
        model: the model being trained.
        checks: the monitor's checks.
        layers: the monitor's `layers` argument.
        histograms: also sample output values for histograms.

    Attributes:
        assignment: `[(check, its sites)]`.
        skipped: the named layers no check can judge (`layers` given).
    """

    def __init__(self, model, checks, layers=None, histograms=False):
        self.model = model
        self.variables = variable_key(model)  # a changed trainable set needs new probes
        self.validated = False  # the first run is where probe data and model meet
        self._layer_names = None
        candidates = make_sites(model, resolve_layers(model, layers))
        forward = [c for c in checks if not c.gradients]
        kept = [s for s in candidates if any(c.applies(s) for c in forward)]
        needed = reducers(forward)
        if histograms and all(r.name != "sample" for r in needed):
            needed.append(ActivationSample(HISTOGRAM_SAMPLES))
        self.probe = Probe(model, needed, layers=[s.layer for s in kept])
        self.gradient_probe = None
        gradient_sites = []
        if any(c.gradients for c in checks):
            # One pass: the forward statistics come from the gradient pass.
            fused = self.probe if self.probe.sites else None
            self.gradient_probe = GradientProbe(model, layers=layers, forward=fused)
            gradient_sites = self.gradient_probe.sites
        judged = {id(s.layer) for s in kept} | {id(s.layer) for s in gradient_sites}
        self.skipped = [s for s in candidates if id(s.layer) not in judged] if layers else []
        self.empty = not judged
        self.checks = checks
        self.assignment = assign(checks, self.probe.sites, gradient_sites)

    @property
    def layer_names(self):
        """The watched layers' names in forward order (once the probe has run): the
        layers measured for their gradient only among their neighbours."""
        if self._layer_names is not None:
            return self._layer_names
        sites = self.probe.sites
        named = {s.name for s in sites}
        gradient_sites = self.gradient_probe.sites if self.gradient_probe is not None else []
        extra = [s for s in gradient_sites if s.name not in named]
        called = [s.name for s in gradient_sites]  # in the order of first calls
        names = [s.name for s in interleave(self.model, sites, extra, called)]
        if self.validated:
            self._layer_names = names
        return names

    def plan(self, calls):
        """Announce about `calls` probe calls in all (see `backend.Lazy`)."""
        for runner in (self.probe, self.gradient_probe):
            if runner is not None:
                runner.plan(calls)

    def run(self, batches, source, step):
        """`({site: {metric: value}}, {histogram tag: values})` of one update."""
        if not self.validated:
            check_inputs(self.model, batches)
        try:  # the first run is where probe data and model meet
            gradients = result = None
            if self.gradient_probe is not None and self.gradient_probe.sites:
                gradients = self.gradient_probe.run_batches(batches, source, checked=self.validated)
                result = gradients.forward
            if result is None and self.probe.sites:
                result = self.probe.run_batches(batches, source)
        except Exception as error:
            if self.validated or isinstance(error, DataMismatch):
                raise
            shapes = keras.tree.map_structure(lambda a: tuple(a.shape), batches[0][0])
            raise ValueError(
                f"Argument `data` does not fit model '{self.model.name}': the forward pass "
                f"failed with {error_summary(error)}. Received: data with input shape(s) "
                f"{shapes} ({source})"
            ) from error
        if not self.validated:  # the sites' forward order is known now
            gradient_sites = self.gradient_probe.sites if self.gradient_probe is not None else []
            self.assignment = assign(self.checks, self.probe.sites, gradient_sites)
        self.validated = True
        scalars = measure(self.assignment, result, gradients, step)
        histograms = {
            f"activations/{site}": values["activation_values"]
            for site, values in (result.metrics.items() if result is not None else ())
            if "activation_values" in values
        }
        return scalars, histograms

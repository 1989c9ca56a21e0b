"""A monitor's probes on one model: built once, run at every update."""

from keras_initkit.checks import assign, measure
from keras_initkit.probe import ActivationSample, Probe, make_sites, resolve_layers
from keras_initkit.probe.gradients import GradientProbe

HISTOGRAM_SAMPLES = 1024


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
        self.validated = False  # the first run is where probe data and model meet
        candidates = make_sites(model, resolve_layers(model, layers))
        forward = [c for c in checks if not c.gradients]
        kept = [s for s in candidates if any(c.applies(s) for c in forward)]
        self.gradient_probe = None
        gradient_sites = []
        if any(c.gradients for c in checks):
            self.gradient_probe = GradientProbe(model, layers=layers)
            gradient_sites = self.gradient_probe.sites
        judged = {id(s.layer) for s in kept} | {id(s.layer) for s in gradient_sites}
        self.skipped = [s for s in candidates if id(s.layer) not in judged] if layers else []
        self.empty = not judged
        reducers = {}
        for check in forward:
            for reducer in check.reducers():
                reducers.setdefault(reducer.name, reducer)
        if histograms:
            reducers.setdefault("sample", ActivationSample(HISTOGRAM_SAMPLES))
        self.probe = Probe(model, list(reducers.values()), layers=[s.layer for s in kept])
        self.assignment = assign(checks, self.probe.sites, gradient_sites)

    def run(self, batches, source, step):
        """`({site: {metric: value}}, {histogram tag: values})` of one update."""
        result = self.probe.run_batches(batches, source) if self.probe.sites else None
        gradients = None
        if self.gradient_probe is not None and self.gradient_probe.sites:
            gradients = self.gradient_probe.run_batches(batches, source)
        scalars = measure(self.assignment, result, gradients, step)
        histograms = {
            f"activations/{site}": values["activation_values"]
            for site, values in (result.metrics.items() if result is not None else ())
            if "activation_values" in values
        }
        return scalars, histograms

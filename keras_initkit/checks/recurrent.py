"""Checks on recurrent layers: saturated gates and the recurrent kernel's spectral radius."""

import keras

from keras_initkit import validation
from keras_initkit.checks.base import Check
from keras_initkit.checks.rules import Rule
from keras_initkit.probe import ActivationMoments, RecurrentGates

RECURRENT_METRICS = ("gate_saturated_fraction", "recurrent_spectral_radius")


def _gates(context):
    by_gate = context.get("gate_saturated_by_gate")
    names = context.get("gate_names") or ()
    if by_gate is None or not names:
        return ""
    worst = max(range(len(names)), key=lambda i: -1 if by_gate[i] != by_gate[i] else by_gate[i])
    return f" (worst: the {names[worst]} gate)"


GATES_SATURATED = Rule(
    name="gate_saturated_fraction",
    kind="saturated_gates",
    metric="gate_saturated_fraction",
    definition=(
        "share of a recurrent layer's gate values (sigmoid gates within `delta` × range of 0 "
        "or 1, the tanh candidate of ±1; over samples, time steps and units, masked steps "
        "excluded), for its most saturated gate, is above the threshold"
    ),
    observation=lambda c: (
        f"{c['value']:.0%} of gate values saturated{_gates(c)}: "
        "saturated gates pass almost no gradient through time"
    ),
    fix=(
        "scale the inputs down, use Glorot/orthogonal kernels (Keras' defaults), or a lower "
        "learning rate; gradient clipping helps once training."
    ),
    threshold="gate_saturated_fraction",
    default=0.3,
    argument="gate_saturation_threshold",
)
CHAOTIC = Rule(
    name="recurrent_spectral_radius",
    kind="chaotic_dynamics",
    metric="recurrent_spectral_radius",
    definition=(
        "the largest |eigenvalue| of the recurrent kernel (of its gate blocks, for LSTM and "
        "GRU) is above the threshold: the state dynamics amplify perturbations step after "
        "step (for a random tanh network above 1: chaos; Sompolinsky et al. 1988)"
    ),
    observation=(
        "recurrent kernel spectral radius {value:.3g}: in recurrent networks, large weights "
        "can also result in chaos (exploding state and gradients through time)"
    ),
    fix="use an orthogonal recurrent_initializer (Keras' default), or clip gradients.",
    threshold="recurrent_spectral_radius",
    default=1.5,
    valid=lambda v, name: validation.positive(v, name, above=1.0),
    argument="spectral_radius_threshold",
)
FORGETFUL = Rule(
    name="short_memory",
    kind="vanishing_memory",
    metric="recurrent_spectral_radius",
    definition=(
        "a SimpleRNN's recurrent kernel has spectral radius below the threshold: its state "
        "forgets a perturbation by that factor per step at least, so gradients vanish over "
        "long sequences (gated cells keep memory in their gates and are not judged)"
    ),
    observation="recurrent kernel spectral radius {value:.3g}: memory fades within a few steps",
    fix=(
        "use an orthogonal recurrent_initializer, or Identity with ReLU (IRNN, Le et al. "
        "2015), or an LSTM/GRU."
    ),
    threshold="short_memory_radius",
    default=0.5,
    below=True,
    argument="short_memory_threshold",
    reads=(),  # a logged radius alone does not say whether the layer is gated
    value=lambda site, scalars: (
        scalars.get("recurrent_spectral_radius")
        if isinstance(site.layer, keras.layers.SimpleRNN)
        else None
    ),
)


class RecurrentCheck(Check):
    """Gate saturation and recurrent dynamics of SimpleRNN, LSTM and GRU layers.

    Args:
        delta: distance to an asymptote, relative to the gate activation's range, within
            which a gate value counts as saturated. Defaults to `0.01`.
        gate_saturation_threshold, spectral_radius_threshold, short_memory_threshold:
            see the rules. Defaults to `0.3`, `1.5` and `0.5`.
    """

    rules = (GATES_SATURATED, CHAOTIC, FORGETFUL)
    metrics = RECURRENT_METRICS + ("activation_mean", "activation_std")
    log_metrics = RECURRENT_METRICS
    layout = {"Recurrent": RECURRENT_METRICS}

    def __init__(self, delta=0.01, **thresholds):
        super().__init__(**thresholds)
        if not 0 < validation.fraction(delta, "delta") < 0.5:
            raise ValueError(f"Argument `delta` must be in (0, 0.5). Received: delta={delta!r}")
        self.delta = float(delta)
        self._by_gate = {}

    def reducers(self):
        return [ActivationMoments(), RecurrentGates(self.delta)]

    def applies(self, site):
        return site.kind == "recurrent"

    def report(self, site, values, step):
        self._by_gate[site.name] = values.get("gate_saturated_by_gate")
        return super().report(site, values, step)

    def context(self, site, scalars, step):
        from keras_initkit.probe.recurrent import gate_names

        return {
            "gate_saturated_by_gate": self._by_gate.get(site.name),
            "gate_names": gate_names(site.layer),
        }

"""The probe engine: run a model once and collect per-layer reductions on device.

Shared by `lsuv_init`, the monitors, `diagnose` and `recalibrate_batchnorm`:
`intercept` (layer-call interception), `Runner` (compile, pack, one host transfer,
exact pooling) with its two runners `Probe` (forward statistics) and
`gradients.GradientProbe`, the `Reducer`s, layer selection (`Site`), data handling,
and `backend` (one module per Keras backend).
"""

from keras_initkit.probe import backend
from keras_initkit.probe.data import (
    DataMismatch,
    as_batches,
    build_on,
    check_inputs,
    error_summary,
)
from keras_initkit.probe.engine import (
    MODES,
    Probe,
    ProbeResult,
    Reducer,
    Runner,
    cached,
    deterministic,
    moments,
    stochastic_layers,
    training_semantics,
)
from keras_initkit.probe.intercept import call_linear, call_split, has_activation, intercept
from keras_initkit.probe.reducers import (
    ActivationMoments,
    ActivationSample,
    AttentionEntropy,
    BatchNormStatistics,
    DeadUnits,
    RecurrentGates,
    Saturation,
)
from keras_initkit.probe.selection import (
    BOUNDED,
    KERNEL_LAYERS,
    RECTIFIERS,
    Site,
    activation_name,
    all_layers,
    make_sites,
    resolve_layers,
    site_names,
)


def no_grad():
    """A context in which eager forward passes record no gradients (torch: `no_grad`)."""
    return backend.current().no_grad()


__all__ = [
    "BOUNDED",
    "MODES",
    "KERNEL_LAYERS",
    "RECTIFIERS",
    "ActivationMoments",
    "ActivationSample",
    "AttentionEntropy",
    "BatchNormStatistics",
    "DeadUnits",
    "Probe",
    "ProbeResult",
    "RecurrentGates",
    "Reducer",
    "Runner",
    "Saturation",
    "Site",
    "activation_name",
    "all_layers",
    "as_batches",
    "deterministic",
    "stochastic_layers",
    "training_semantics",
    "backend",
    "build_on",
    "cached",
    "call_linear",
    "call_split",
    "DataMismatch",
    "check_inputs",
    "error_summary",
    "has_activation",
    "intercept",
    "make_sites",
    "moments",
    "no_grad",
    "resolve_layers",
    "site_names",
]

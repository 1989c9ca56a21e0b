"""The probe engine: run a model once and collect per-layer reductions on device.

Shared by `lsuv_init`, the monitors, `diagnose` and `recalibrate_batchnorm`.
"""

from keras_initkit.probe.data import as_batches, check_inputs, check_positive_int
from keras_initkit.probe.engine import Probe, ProbeResult, Reducer, moments
from keras_initkit.probe.intercept import (
    call_linear,
    call_split,
    has_activation,
    intercept,
    no_grad,
)
from keras_initkit.probe.reducers import (
    ActivationMoments,
    ActivationSample,
    BatchNormStatistics,
    DeadUnits,
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
)

__all__ = [
    "BOUNDED",
    "KERNEL_LAYERS",
    "RECTIFIERS",
    "ActivationMoments",
    "ActivationSample",
    "BatchNormStatistics",
    "DeadUnits",
    "Probe",
    "ProbeResult",
    "Reducer",
    "Saturation",
    "Site",
    "activation_name",
    "all_layers",
    "as_batches",
    "call_linear",
    "call_split",
    "check_inputs",
    "check_positive_int",
    "has_activation",
    "intercept",
    "make_sites",
    "moments",
    "no_grad",
    "resolve_layers",
]

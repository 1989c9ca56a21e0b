"""keras_initkit: initializers Keras lacks, and diagnostics that show why a deep net won't train."""

from keras_initkit import initializers
from keras_initkit.batchnorm import RecalibrationReport, recalibrate_batchnorm
from keras_initkit.health import HealthReport, diagnose
from keras_initkit.lsuv import LSUVReport, lsuv_init
from keras_initkit.version import __version__

__all__ = [
    "HealthReport",
    "LSUVReport",
    "RecalibrationReport",
    "__version__",
    "diagnose",
    "initializers",
    "lsuv_init",
    "recalibrate_batchnorm",
]

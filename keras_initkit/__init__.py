"""keras_initkit: initializers Keras lacks, and diagnostics that show why a deep net won't train.

`import keras_initkit` imports every module that registers a serializable class, so
`keras.saving.load_model` works in a fresh process after that one import.
"""

from keras_initkit import callbacks, initializers, probe
from keras_initkit.batchnorm import RecalibrationReport, recalibrate_batchnorm
from keras_initkit.health import HealthReport, diagnose
from keras_initkit.lsuv import LSUVReport, lsuv_init
from keras_initkit.suggest import SuggestionReport, suggest_initializer
from keras_initkit.version import __version__

__all__ = [
    "HealthReport",
    "LSUVReport",
    "RecalibrationReport",
    "SuggestionReport",
    "__version__",
    "callbacks",
    "diagnose",
    "initializers",
    "lsuv_init",
    "probe",
    "recalibrate_batchnorm",
    "suggest_initializer",
]

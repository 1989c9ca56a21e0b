"""`model.fit` callbacks: LSUV at train begin, the training monitors, and Keras' epoch
logs to TensorBoard on every backend."""

from keras_initkit.callbacks.base import Monitor
from keras_initkit.callbacks.batchnorm import BatchNormMonitor
from keras_initkit.callbacks.dead_units import DeadUnitMonitor
from keras_initkit.callbacks.gradient import GradientMonitor
from keras_initkit.callbacks.logs import TensorBoardLogs
from keras_initkit.callbacks.lsuv import LSUVCallback
from keras_initkit.callbacks.saturation import SaturationMonitor
from keras_initkit.callbacks.training import TrainingMonitor
from keras_initkit.callbacks.warning import InitkitWarning
from keras_initkit.checks import Finding

__all__ = [
    "BatchNormMonitor",
    "DeadUnitMonitor",
    "Finding",
    "GradientMonitor",
    "InitkitWarning",
    "LSUVCallback",
    "Monitor",
    "SaturationMonitor",
    "TensorBoardLogs",
    "TrainingMonitor",
]

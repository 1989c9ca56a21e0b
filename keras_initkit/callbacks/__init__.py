"""`model.fit` callbacks: LSUV at train begin, and the training monitors."""

from keras_initkit.callbacks.base import InitkitWarning, Monitor
from keras_initkit.callbacks.batchnorm import BatchNormMonitor
from keras_initkit.callbacks.dead_units import DeadUnitMonitor
from keras_initkit.callbacks.gradient import GradientMonitor
from keras_initkit.callbacks.lsuv import LSUVCallback
from keras_initkit.callbacks.saturation import SaturationMonitor
from keras_initkit.callbacks.training import TrainingMonitor

__all__ = [
    "BatchNormMonitor",
    "DeadUnitMonitor",
    "GradientMonitor",
    "InitkitWarning",
    "LSUVCallback",
    "Monitor",
    "SaturationMonitor",
    "TrainingMonitor",
]

"""keras_initkit: initializers Keras lacks, and diagnostics that show why a deep net won't train."""

from keras_initkit import initializers
from keras_initkit.version import __version__

__all__ = ["__version__", "initializers"]

"""Initializers Keras lacks, registered as `"keras_initkit>Name"`.

Importing this package registers every class with Keras' serialization, so
`keras.initializers.get("keras_initkit>Sparse")` and `keras.saving.load_model`
find them.
"""

from keras_initkit.initializers.gain import calculate_gain as calculate_gain
from keras_initkit.initializers.lsuv import LSUV
from keras_initkit.initializers.random_initializers import Normalized, Sparse
from keras_initkit.initializers.structural import DeltaOrthogonal, Identity, ZerO

# The registered initializer classes (tests iterate it as such); `calculate_gain`, a
# function, is re-exported by the explicit `as` import above.
__all__ = ["DeltaOrthogonal", "Identity", "LSUV", "Normalized", "Sparse", "ZerO"]

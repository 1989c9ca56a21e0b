"""Turn what users pass as probe data into a list of input batches, or fail clearly.

Accepted: a NumPy array or backend tensor; a list or dict of them for multi-input
models; a `tf.data.Dataset`; a `keras.utils.PyDataset`. A tuple, whether passed
directly or yielded by a dataset, follows Keras' `(x,)`, `(x, y)`,
`(x, y, sample_weight)` convention: `x` is the input, `y` the targets (used only where
gradients are computed), the weights are ignored.
Everything is validated on the host before any model sees it: empty batches, NaN or
Inf, and mismatched batch sizes across inputs raise `ValueError`.
"""

import re

import keras
import numpy as np

from keras_initkit.probe.backend import to_numpy
from keras_initkit.validation import positive_int


def _is_tf_dataset(data):
    module = type(data).__module__
    return module.startswith("tensorflow") and hasattr(data, "element_spec")


def is_dataset(data):
    """True for a `tf.data.Dataset` or a `keras.utils.PyDataset` (batches of their own)."""
    return _is_tf_dataset(data) or isinstance(data, keras.utils.PyDataset)


def is_infinite(data):
    """True for an infinite `tf.data.Dataset` (`tf.data.INFINITE_CARDINALITY` is -1)."""
    return _is_tf_dataset(data) and int(data.cardinality()) == -1


def _x_y(element):
    """Keras' unpack_x_y_sample_weight: a tuple is (x, y[, w]); a list is x."""
    if isinstance(element, tuple):
        if not 1 <= len(element) <= 3:
            raise ValueError(
                "A tuple of probe data must be (x,), (x, y) or (x, y, sample_weight). "
                f"Received: a tuple of length {len(element)}"
            )
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


def _is_array(x):
    """A NumPy array, a tensor of the current backend, or another framework's array
    (a `tf.Tensor` under JAX, a CPU `torch.Tensor` under TensorFlow): what Keras'
    own `fit` takes."""
    if isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
        return True
    return hasattr(x, "__array__") and hasattr(x, "shape") and hasattr(x, "dtype")


def _to_numpy(x):
    if x is None:
        return None

    def convert(t):
        if isinstance(t, np.ndarray):
            return t
        if keras.ops.is_tensor(t):
            return to_numpy(t)
        return np.asarray(t)

    return keras.tree.map_structure(convert, x)


def _numpy_pair(element):
    x, y = _x_y(element)
    return _to_numpy(x), _to_numpy(y)


def _python_number(value):
    return isinstance(value, (int, float, complex))  # bool too


def _check_batch(x, argument, where="", unbatched=""):
    """The number of samples of the batch `x`; raises where its arrays are not one
    batch. `unbatched`: what a scalar likely means, said with the error."""
    leaves = keras.tree.flatten(x)
    if not leaves:
        raise ValueError(f"Argument `{argument}` holds no arrays{where}. Received: {x!r}")
    sizes = set()
    for leaf in leaves:
        if leaf.ndim == 0:
            raise ValueError(
                f"Argument `{argument}` must hold batched arrays with a leading "
                f"sample axis{where}. Received: a scalar{unbatched}"
            )
        sizes.add(leaf.shape[0])
        if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
            bad = int(np.size(leaf) - np.count_nonzero(np.isfinite(leaf)))
            raise ValueError(
                f"Argument `{argument}` must be finite{where}. Received: {bad} NaN or "
                f"Inf values in an array of shape {leaf.shape}"
            )
    if len(sizes) > 1:
        raise ValueError(
            f"All inputs in `{argument}` must have the same number of samples"
            f"{where}. Received: sizes {sorted(sizes)}"
        )
    if 0 in sizes:
        raise ValueError(
            f"Argument `{argument}` must contain at least one sample{where}. "
            "Received: an empty batch"
        )
    return sizes.pop()


def as_batches(data, *, batch_size=None, max_batches=None, argument="data"):
    """Return `(batches, description)`: host (NumPy) `(x, y)` batches (`y` may be
    None) and a phrase saying what was taken, e.g. "512 samples in 1 batch" or "the first 1 of the
    dataset's batches".

    Arrays are split into chunks of `batch_size` (all in one when None). Datasets
    yield at most `max_batches` batches (all when None; an infinite dataset requires
    `max_batches`).
    """
    positive_int(max_batches, "max_batches")
    positive_int(batch_size, "batch_size")
    if data is None:
        raise ValueError(f"Argument `{argument}` is required. Received: {argument}=None")
    if isinstance(data, keras.utils.PyDataset):
        count = len(data)
        if max_batches is not None:
            count = min(count, max_batches)
        batches = [_numpy_pair(data[i]) for i in range(count)]
        source = f"{count} batch(es) of the PyDataset"
        unbatched = " (`__getitem__` must return a batch)"
    elif _is_tf_dataset(data):
        if is_infinite(data) and max_batches is None:
            raise ValueError(
                f"Argument `{argument}` is an infinite tf.data.Dataset: pass "
                "`max_batches` or `.take(n)` it. Received: an infinite dataset"
            )
        if max_batches is not None:
            data = data.take(max_batches)
        batches = [_numpy_pair(element) for element in data]
        source = f"{len(batches)} batch(es) of the tf.data.Dataset"
        unbatched = " (an unbatched dataset? Batch it: `dataset.batch(32)`)"
    elif isinstance(data, (list, tuple, dict)) or _is_array(data):
        parts = data if isinstance(data, tuple) else (data,)  # `(x, y)` or `x`
        for part in parts:
            if (
                isinstance(part, list)
                and part
                and all(_python_number(a) for a in keras.tree.flatten(part))
            ):
                shape = np.shape(part)
                raise ValueError(
                    f"Argument `{argument}` must hold arrays: a Python list holds one array "
                    "per model input. Received: a Python list of numbers (shape "
                    f"{shape}): pass `np.asarray(...)` of it"
                )
        x, y = _numpy_pair(data)
        unbatched = (
            " (a Python list holds one array per model input: pass a NumPy array)"
            if any(isinstance(part, list) for part in parts)
            else ""
        )
        n = _check_batch(x, argument, unbatched=unbatched)
        # Before slicing: more targets than inputs would be cut to the inputs' count (the
        # batches' checks below validate the values).
        m = next((a.shape[0] for a in keras.tree.flatten(y) if a.ndim), n) if y is not None else n
        if m != n:
            raise ValueError(
                f"Inputs and targets in `{argument}` must have the same number of samples. "
                f"Received: {n} inputs and {m} targets"
            )
        step = n if batch_size is None else batch_size
        batches = [
            keras.tree.map_structure(lambda a, i=i: a[i : i + step], (x, y), none_is_leaf=False)
            for i in range(0, n, step)
        ]
        if max_batches is not None:
            batches = batches[:max_batches]
        source = f"{n} samples in {len(batches)} batch(es)"
    else:
        raise ValueError(
            f"Argument `{argument}` must be a NumPy array, a tensor, a list/dict of "
            "them, a tf.data.Dataset or a keras.utils.PyDataset. "
            f"Received: {argument} of type {type(data).__name__}"
        )
    if not batches:
        raise ValueError(f"Argument `{argument}` yielded no batches. Received: an empty dataset")
    for i, (x, y) in enumerate(batches):
        n = _check_batch(x, argument, f" (batch {i})", unbatched)
        if y is not None and _check_batch(y, argument, f" (targets of batch {i})", unbatched) != n:
            raise ValueError(
                f"Inputs and targets in `{argument}` must have the same number of "
                f"samples (batch {i}). Received: {n} inputs and "
                f"{keras.tree.flatten(y)[0].shape[0]} targets"
            )
    return batches, source


def _model_inputs(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return list(inputs) if inputs else None


class DataMismatch(ValueError):
    """Data that does not fit the model's inputs, or targets that do not fit its loss:
    raised as is by every entry point (a monitor does not wrap it again)."""


def error_summary(error, limit=300):
    """`"<type>: <first line>"` of `error`, without terminal colour codes and at most
    about `limit` characters: Keras' errors span many lines (torch's print the tensor),
    and the chained traceback keeps them whole."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    line = next((line.strip() for line in lines if line.strip()), "")
    if len(line) > limit:
        line = line[:limit].rstrip() + " …"
    line = line.rstrip(".")  # the caller's sentence goes on
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def build_on(model, x, argument="data"):
    """Build an unbuilt `model` (a subclassed one before its first call) by calling it
    on the first two samples of the batch `x`, as its first training step would; a
    `ValueError` naming `argument` where `x` does not fit it."""
    if model.built:
        return
    sample = keras.tree.map_structure(lambda a: a[:2], x)
    try:
        model(sample, training=False)
    except Exception as e:
        raise DataMismatch(
            f"Argument `{argument}` does not fit the model: building it on `{argument}` "
            f"failed with {error_summary(e)}. Received: {argument} of shape(s) "
            f"{[tuple(a.shape) for a in keras.tree.flatten(x)]}"
        ) from e


def check_inputs(model, batches, argument="data"):
    """Raise `ValueError` when a batch does not fit `model.inputs` (when it has them).

    Subclassed models declare no inputs: they are checked by their own first call.
    """
    inputs = _model_inputs(model)
    if inputs is None:
        return
    names = [t.name for t in inputs]
    for i, (x, _) in enumerate(batches):
        if isinstance(x, dict) and all(name in x for name in names):
            leaves = [x[name] for name in names]
        elif isinstance(x, dict) and len(x) != len(names):
            missing = [name for name in names if name not in x]
            raise DataMismatch(
                f"Argument `{argument}` must hold an array for each model input "
                f"{names}: {missing} missing. Received: a dict with keys {sorted(x)} "
                f"in batch {i}"
            )
        else:
            leaves = keras.tree.flatten(x)
            if len(leaves) != len(inputs):
                raise DataMismatch(
                    f"Argument `{argument}` must hold one array per model input "
                    f"({len(inputs)}). Received: {len(leaves)} array(s) in batch {i}"
                )
        for array, tensor in zip(leaves, inputs):
            expected, got = tuple(tensor.shape), tuple(array.shape)
            if len(got) != len(expected) or any(
                e is not None and e != g for e, g in zip(expected[1:], got[1:])
            ):
                raise DataMismatch(
                    f"Argument `{argument}` does not fit the model's input "
                    f"'{tensor.name}' of shape {expected}. Received: an array of shape "
                    f"{got} in batch {i}"
                )

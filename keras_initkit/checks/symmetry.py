"""Symmetry check: units with identical incoming weights, read from the weights."""

import functools

import keras
import numpy as np

from keras_initkit.checks.base import Check
from keras_initkit.checks.rules import Rule
from keras_initkit.probe import backend
from keras_initkit.probe.backend import to_numpy

SYMMETRIC = Rule(
    name="symmetric_fraction",
    kind="symmetric",
    metric="symmetric_fraction",
    definition=(
        "share of a hidden kernel layer's units (every kernel layer but the last, in forward "
        "order) whose incoming weights (kernel column) and bias equal another unit's is above "
        "the threshold (Goodfellow et al. 2016, §8.4's symmetry point)"
    ),
    observation=(
        "{symmetric_units:.0f} of {units:.0f} units have the same incoming weights and bias as "
        "another unit: they compute the same function and get the same updates unless the "
        "next layer tells them apart"
    ),
    fix="use a random initializer (he_normal, glorot_uniform).",
    threshold="symmetric_fraction",
    default=0.0,
    argument="symmetric_threshold",
)


def _twins_text(context):
    twins = context["twins"]
    named = ", ".join(f"`{name}`" for name in twins[:3])
    more = f" and {len(twins) - 3} more layers'" if len(twins) > 3 else "'s"
    return (
        f"its kernel, drawn by {context['initializer']}, equals {named}{more} value for value: "
        "one initializer instance drew them (a Keras random initializer returns the same "
        "values at every call, seeded or not); layers fed the same input compute the same "
        "function, and a stack of them multiplies by the same matrix at every layer"
    )


IDENTICAL = Rule(
    name="identical_kernels",
    kind="symmetric",
    metric="identical_kernels",
    definition=(
        "a kernel layer's kernel, drawn by a random initializer (one with a `seed`), equals "
        "another layer's kernel value for value; `identical_kernels` counts those other "
        "layers (identity, zeros, constant and ZerO kernels are equal by design and not "
        "judged)"
    ),
    observation=_twins_text,
    fix=(
        'give each layer its own initializer: a name (`kernel_initializer="he_normal"`), '
        "a new instance per layer, or a different seed per layer; in a model built for you "
        "(a keras_hub backbone), assign each such kernel a fresh draw."
    ),
)


_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def _judged(layer):
    """`(kernel, unit axis, bias or None)` of a layer judged for symmetry, or None.

    Depthwise layers are not judged (each unit has its own input channel: no shared
    inputs), nor kernels of rank < 2 or with fewer than 2 units. The units are the last
    kernel axis, the second last for `Conv*Transpose`; separable convolutions are judged
    by their `pointwise_kernel`.
    """
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return None
    kernel = getattr(layer, "pointwise_kernel", None)
    if kernel is None:
        kernel = getattr(layer, "kernel", None)
    if not isinstance(kernel, keras.Variable) or len(kernel.shape) < 2:
        return None
    axis = -2 if isinstance(layer, _TRANSPOSED) else -1
    units = kernel.shape[axis]
    if units < 2:
        return None
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, keras.Variable) or tuple(bias.shape) != (units,):
        bias = None
    return kernel, axis, bias


def _wide(bits):
    """Whether to sum `bits` in int64: TensorFlow tensors on a GPU.

    TensorFlow's GPU kernels for int32 arithmetic keep their tensors in host memory;
    its int64 ones keep them on the GPU.
    """
    return keras.backend.backend() == "tensorflow" and "GPU" in bits.device


def _bits(weights, shape):
    """The weights' float32 bit patterns as integers of `shape`, on the device.

    float16, bfloat16 and float64 weights are cast to float32 first (equal stays
    equal). The integers are int32, or int64 where `_wide`.
    """
    ops = keras.ops
    w = ops.cast(ops.reshape(ops.stop_gradient(weights), shape), "float32")
    bits = ops.view(w, "int32")
    return ops.cast(bits, "int64") if _wide(bits) else bits


def _fingerprints(kernel, axis, bias):
    """`(3, units)` integer fingerprints of the units' incoming weights, on the device.

    The wrapping sums of the weights' bit patterns over each half of the kernel column,
    and the bias's bit pattern (0 without a bias). Integer addition wraps around and is
    associative, so units with equal weights get equal sums in any summation order;
    random weights share all three with negligible probability (columns that permute the
    same values within each half share them: like every collision, they are compared
    exactly). The bits of -0.0 and 0.0 differ by 2**31: `_candidates` compares the
    sums modulo 2**31, so no pass over the weights normalises them.
    """
    ops = keras.ops
    units = kernel.shape[axis]
    bits = _bits(kernel if axis == -1 else ops.moveaxis(kernel, axis, -1), (-1, units))
    half = bits.shape[0] // 2
    if bits.shape[0] % 2 == 0:  # one pass: both halves' sums at once
        sums = ops.sum(ops.reshape(bits, (2, half, units)), axis=1)
    else:
        sums = ops.stack([ops.sum(bits[:half], axis=0), ops.sum(bits[half:], axis=0)])
    if bias is None:
        return ops.concatenate([sums, ops.zeros((1, units), bits.dtype)], axis=0)
    return ops.concatenate([sums, _bits(bias, (1, units))], axis=0)


def _exact_count(kernel, axis, bias, candidates):
    """Units among `candidates` whose kernel column and bias equal another's, on the host.

    Exact equality of the incoming weights is the definition of a symmetric unit; the
    fingerprints only select the candidates.
    """
    k = to_numpy(kernel)
    columns = np.moveaxis(k, axis, -1).reshape(-1, k.shape[axis])[:, candidates].T
    if bias is not None:
        b = to_numpy(bias)[candidates, None]
        columns = np.concatenate([columns, b], axis=1)
    _, counts = np.unique(columns, axis=0, return_counts=True)
    return int(counts[counts > 1].sum())


def _candidates(fingerprints):
    """Units whose `(3, units)` fingerprints (on the host) equal another unit's.

    The sums are compared modulo 2**31: the bits of -0.0 and 0.0 differ by 2**31, so
    units whose weights compare equal have sums that differ by a multiple of 2**31.
    """
    keys = np.ascontiguousarray(fingerprints.T.astype(np.int64) & 0x7FFFFFFF)
    keys = keys.view(np.dtype((np.void, keys.shape[1] * 8)))
    _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    return np.flatnonzero(counts[inverse] > 1)


def _host_fingerprints(kernel, axis, bias):
    """`_fingerprints` of NumPy arrays (the same integers: integer sums wrap the same
    way in any order)."""
    units = kernel.shape[axis]
    w = np.asarray(np.moveaxis(kernel, axis, -1), np.float32).reshape(-1, units)
    bits = np.ascontiguousarray(w).view(np.int32)
    half = bits.shape[0] // 2
    last = (
        np.zeros(units, np.int32) if bias is None else np.asarray(bias, np.float32).view(np.int32)
    )
    return np.stack([bits[:half].sum(0, dtype=np.int32), bits[half:].sum(0, dtype=np.int32), last])


@functools.lru_cache(maxsize=16)
def _compiled(backend_name, layout, fingerprints):
    """Every judged layer's `fingerprints` side by side, `(3, all units)`, as one function
    of `[(kernel, bias or None)]` compiled where that pays (`compile_arrays`: JAX,
    whose eager ops compile one by one), once per `layout` (each layer's unit axis and
    whether it has a bias) and shapes: a second model of the same architecture reuses it."""

    def together(values):
        return keras.ops.concatenate(
            [fingerprints(kernel, axis, bias) for (kernel, bias), (axis, _) in zip(values, layout)],
            axis=1,
        )

    return backend.current().compile_arrays(together)


def _all_fingerprints(present, values, on_device):
    """`(3, all units)` fingerprints of the `(kernel, axis, bias)` in `present`, whose
    `(kernel, bias or None)` tensors are `values`, on the host: computed on the device
    and read back in one transfer (`on_device`), or computed on the host from the
    weights (where they live in host memory anyway)."""
    if on_device:
        layout = tuple((axis, bias is not None) for _, axis, bias in present)
        compiled = _compiled(keras.backend.backend(), layout, _fingerprints)
        return to_numpy(compiled(values))
    return np.concatenate(
        [
            _host_fingerprints(to_numpy(kernel), axis, None if bias is None else to_numpy(bias))
            for (kernel, bias), (_, axis, _) in zip(values, present)
        ],
        axis=1,
    )


def _fingerprinted(layers, on_device=None):
    """`[(judged, (3, units) host fingerprints) or None]` for `layers` (see
    `symmetric_units_batch`): every judged layer's fingerprints computed together, read
    back in one transfer."""
    judged = [_judged(layer) for layer in layers]
    present = [j for j in judged if j is not None]
    if not present:
        return [None] * len(judged)
    tensor = keras.ops.convert_to_tensor
    values = [
        (tensor(kernel), None if bias is None else tensor(bias)) for kernel, _, bias in present
    ]
    if on_device is None:
        on_device = not all(backend.current().on_host(kernel) for kernel, _ in values)
    host = _all_fingerprints(present, values, on_device)
    result, start = [], 0
    for j in judged:
        if j is None:
            result.append(None)
            continue
        units = j[0].shape[j[1]]
        result.append((j, host[:, start : start + units]))
        start += units
    return result


def _symmetric_count(fingerprinted):
    """`(symmetric, units)` of one `_fingerprinted` entry."""
    (kernel, axis, bias), fingerprints = fingerprinted
    candidates = _candidates(fingerprints)
    symmetric = _exact_count(kernel, axis, bias, candidates) if candidates.size else 0
    return symmetric, kernel.shape[axis]


def symmetric_units_batch(layers, on_device=None):
    """`symmetric_units` of each of `layers`, with one host transfer for all of them.

    Every judged layer's fingerprints are computed together and compared on the host;
    only the layers where fingerprints collide are read whole, and only their
    colliding units are compared exactly.

    Args:
        layers: the layers, in any order.
        on_device: compute the fingerprints on the device (one transfer of the
            fingerprints) or on the host from the weights. `None`: on the device unless
            every kernel is in host memory already (a CPU), where reading the weights
            costs nothing and NumPy needs no compiling: ResNet50's 53 kernels took
            0.8 s to compile and run under JAX's `jit` (3.8 s as eager ops), 0.03 s
            in NumPy.

    Returns:
        A list with, for each layer, `(symmetric, units)` (units whose incoming weights
        and bias equal another unit's, and units) or None if the layer is not judged.
    """
    return [None if f is None else _symmetric_count(f) for f in _fingerprinted(layers, on_device)]


def _initializer(layer):
    """The initializer of the kernel `_judged` reads (a separable convolution's pointwise
    one), or None."""
    separable = getattr(layer, "pointwise_kernel", None) is not None
    return getattr(layer, "pointwise_initializer" if separable else "kernel_initializer", None)


def _drawn(layer):
    """Whether the layer's judged kernel was drawn by a random initializer (one with a
    `seed`): identity, zeros, constant or ZerO kernels are equal by design."""
    get_config = getattr(_initializer(layer), "get_config", None)
    return get_config is not None and "seed" in get_config()


def _identical(fingerprinted):
    """Groups (lists of indices into `fingerprinted`, two or more) of entries whose
    kernels are equal value for value: fingerprints select the candidates (same shape,
    same kernel sums modulo 2**31, as `_candidates`), compared exactly on the host.
    Entries holding the same variable (one layer called twice) count once."""
    groups = {}
    for i, entry in enumerate(fingerprinted):
        if entry is None:
            continue
        (kernel, _, _), fingerprints = entry
        key = (
            tuple(kernel.shape),
            (fingerprints[:2].astype(np.int64) & 0x7FFFFFFF).tobytes(),
        )
        groups.setdefault(key, {}).setdefault(id(kernel), i)
    found = []
    for candidates in groups.values():
        candidates = list(candidates.values())
        while len(candidates) > 1:
            first = to_numpy(fingerprinted[candidates[0]][0][0])
            same = [
                j for j in candidates[1:] if np.array_equal(first, to_numpy(fingerprinted[j][0][0]))
            ]
            if same:
                found.append([candidates[0], *same])
            candidates = [j for j in candidates[1:] if j not in same]
    return found


def identical_kernels(layers, on_device=None):
    """Layers whose kernels were drawn by a random initializer and equal another
    layer's, value for value.

    Keras' random initializers draw from their seed: one instance (seeded or not)
    returns the same values at every call, so one instance passed to several layers
    gives every layer of the same kernel shape the same kernel (keras_hub's
    LlamaAttention passes one to its four projections: its key and value kernels are
    equal).

    Args:
        layers: the layers, in any order; judged as `symmetric_units` judges them, if
            their kernel's initializer has a `seed` (identity, zeros, constant and ZerO
            kernels are equal by design).
        on_device: where to compute the fingerprints (see `symmetric_units_batch`).

    Returns:
        Groups of two or more of `layers` with equal kernels, each in `layers`' order.
    """
    return _identical_groups(layers, _fingerprinted(layers, on_device))


def _identical_groups(layers, fingerprinted):
    drawn = [
        f if f is not None and _drawn(layer) else None for layer, f in zip(layers, fingerprinted)
    ]
    return [[layers[i] for i in group] for group in _identical(drawn)]


def symmetric_units(layer, on_device=None):
    """Units whose incoming weights and bias equal another unit's, and units.

    Args:
        layer: a layer; judged if it has a `kernel` (or `pointwise_kernel`) of rank 2
            or more with at least 2 units and is not a depthwise convolution.
        on_device: where to compute the fingerprints (see `symmetric_units_batch`).

    Returns:
        `(symmetric, units)`, or None if the layer is not judged.
    """
    return symmetric_units_batch([layer], on_device)[0]


class SymmetryCheck(Check):
    """Symmetric units of hidden kernel layers (`symmetric_fraction`) and kernels equal to
    another layer's (`identical_kernels`), from the weights.

    It reads every kernel (fingerprints, on the device with one host transfer for all
    layers, or on the host where the weights live there; kernels whose fingerprints
    collide are compared exactly), so `diagnose` runs it and the monitors do not:
    training cannot break a symmetry, so the check at initialization is the one that
    matters.
    """

    rules = (SYMMETRIC, IDENTICAL)

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        self._twins = {}  # {site name: (names of the layers with its kernel, initializer)}

    def applies(self, site):
        return site.has_kernel

    def complete(self, sites, scalars):
        layers = [s.layer for s in sites]
        fingerprinted = _fingerprinted(layers)
        # The output layer's units are told apart by the loss: hidden layers only.
        for site, entry in zip(sites[:-1], fingerprinted[:-1]):
            if entry is not None:
                symmetric, units = _symmetric_count(entry)
                scalars.setdefault(site.name, {}).update(
                    symmetric_units=symmetric, units=units, symmetric_fraction=symmetric / units
                )
        by_layer = {id(s.layer): s for s in sites}
        for group in _identical_groups(layers, fingerprinted):
            names = [by_layer[id(layer)].name for layer in group]
            for layer, name in zip(group, names):
                twins = [n for n in names if n != name]
                initializer = type(_initializer(layer)).__name__
                self._twins[name] = (twins, initializer)
                scalars.setdefault(name, {})["identical_kernels"] = len(twins)

    def context(self, site, scalars, step):
        twins, initializer = self._twins.get(site.name, ([], ""))
        return {"twins": twins, "initializer": initializer}

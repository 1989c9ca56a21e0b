"""Recurrent layers: one call's hidden-state sequence, and the gates recomputed from it.

A recurrent layer's gates live inside a loop (`tf.while_loop`, `lax.scan`, a cuDNN
kernel) that the probe cannot reach into. But every gate at step t is a function of the
step's input `x_t` and the previous hidden state `h_{t-1}` only, so with the layer's
hidden-state sequence `h` in hand all gates are recomputed at once, without a loop:
`z = x·W + h_{t-1}·U + b`, split per gate and passed through the cell's activations.
The probe gets the sequence from the layer itself (a second call with
`return_sequences=True` when the layer returns only its last state).
"""

import dataclasses

import keras

from keras_initkit._keras_private import shadowing
from keras_initkit.probe.backend import to_numpy

# Gate names per cell type, in the order of the kernels' column blocks.
GATES = {
    keras.layers.SimpleRNNCell: ("state",),
    keras.layers.LSTMCell: ("input", "forget", "candidate", "output"),
    keras.layers.GRUCell: ("update", "reset", "candidate"),
}


def is_recurrent(layer):
    return isinstance(layer, keras.layers.RNN)


def gate_names(layer):
    """The gates of a recurrent layer's cell, or None for a cell we do not know."""
    return GATES.get(type(getattr(layer, "cell", None)))


@dataclasses.dataclass
class Trace:
    """What one call of a recurrent layer saw and computed (device tensors).

    Attributes:
        inputs: the input sequence `(batch, time, features)`.
        sequence: the hidden states `(batch, time, units)`, in processing order.
        mask: `(batch, time)` booleans, or None.
        initial: the initial hidden state `(batch, units)`, or None (zeros).
    """

    inputs: object
    sequence: object
    mask: object
    initial: object


def call_recurrent(layer, call, args, kwargs):
    """Run `call` and return `(Trace, output)`; the output is the layer's own."""
    out = call(*args, **kwargs)
    first = out[0] if layer.return_state else out
    if layer.return_sequences:
        sequence = first
    else:
        with shadowing(layer, return_sequences=True, return_state=False):
            sequence = call(*args, **kwargs)
    inputs = args[0] if args else kwargs.get("sequences")
    mask = kwargs.get("mask")
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    initial = kwargs.get("initial_state")
    if isinstance(initial, (list, tuple)):
        initial = initial[0] if initial else None
    return Trace(inputs, sequence, mask, initial), out


def _reverse(x):
    return None if x is None else keras.ops.flip(x, axis=1)


def gates(layer, trace):
    """`[(gate name, activation name, values (batch, time, units))]` of one call."""
    cell = layer.cell
    x = keras.ops.cast(trace.inputs, "float32")
    h = keras.ops.cast(trace.sequence, "float32")
    if layer.go_backwards:  # the sequence is in processing order: reverse the inputs
        x = _reverse(x)
    first = keras.ops.zeros_like(h[:, :1]) if trace.initial is None else trace.initial[:, None]
    previous = keras.ops.concatenate([keras.ops.cast(first, "float32"), h[:, :-1]], axis=1)
    w, u = (keras.ops.cast(k, "float32") for k in (cell.kernel, cell.recurrent_kernel))
    bias = None if cell.bias is None else keras.ops.cast(cell.bias, "float32")
    names = gate_names(layer)
    if isinstance(cell, keras.layers.GRUCell):
        return _gru(cell, x, previous, w, u, bias, names)
    z = keras.ops.matmul(x, w) + keras.ops.matmul(previous, u)
    if bias is not None:
        z = z + bias
    if isinstance(cell, keras.layers.SimpleRNNCell):
        return [(names[0], _name(cell.activation), cell.activation(z))]
    blocks = keras.ops.split(z, 4, axis=-1)
    acts = (cell.recurrent_activation, cell.recurrent_activation, cell.activation)
    acts += (cell.recurrent_activation,)
    return [(n, _name(a), a(b)) for n, a, b in zip(names, acts, blocks)]


def _gru(cell, x, previous, w, u, bias, names):
    b_in, b_rec = (bias, None) if bias is None or len(bias.shape) == 1 else (bias[0], bias[1])
    xz, xr, xh = keras.ops.split(keras.ops.matmul(x, w) + (0 if b_in is None else b_in), 3, -1)
    act, ract = cell.activation, cell.recurrent_activation
    if cell.reset_after:
        inner = keras.ops.matmul(previous, u) + (0 if b_rec is None else b_rec)
        hz, hr, hh = keras.ops.split(inner, 3, axis=-1)
        z, r = ract(xz + hz), ract(xr + hr)
        candidate = act(xh + r * hh)
    else:
        uz, ur, uh = keras.ops.split(u, 3, axis=-1)
        z = ract(xz + keras.ops.matmul(previous, uz))
        r = ract(xr + keras.ops.matmul(previous, ur))
        candidate = act(xh + keras.ops.matmul(r * previous, uh))
    pairs = [(ract, z), (ract, r), (act, candidate)]
    return [(n, _name(a), v) for n, (a, v) in zip(names, pairs)]


def _name(fn):
    return getattr(fn, "__name__", type(fn).__name__)


def spectral_radii(layer):
    """Largest |eigenvalue| of each gate's block of the recurrent kernel (host NumPy)."""
    import numpy as np

    kernel = to_numpy(layer.cell.recurrent_kernel).astype(np.float64)
    blocks = np.split(kernel, len(gate_names(layer)), axis=1)
    return np.array([float(np.max(np.abs(np.linalg.eigvals(b)))) for b in blocks])

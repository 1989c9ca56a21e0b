"""Layer-call interception: the one mechanism every probe, LSUV and recalibration uses.

Keras 3 routes every layer call, eager or traced, Sequential, Functional, nested or
subclassed, through `Layer.__call__`, which looks `self.call` up on each call. Shadowing
`call` with an instance attribute therefore intercepts exactly that layer, in any
model, without touching its class or its graph. `intercept` installs such wrappers and
always removes them again, also when the forward pass raises.
"""

import contextlib

import keras

from keras_initkit._keras_private import shadowing


@contextlib.contextmanager
def intercept(layers, hook):
    """Route each call of `layers` through `hook(layer, call, args, kwargs)`.

    `call` is the layer's own (bound) `call`; the hook returns what the layer should
    return. A layer that is already intercepted is wrapped again and restored to the
    outer wrapper afterwards, so interceptions nest.
    """
    with contextlib.ExitStack() as stack:
        for layer in layers:

            def wrapper(*args, __layer=layer, __call=layer.call, **kwargs):
                return hook(__layer, __call, args, kwargs)

            stack.enter_context(shadowing(layer, call=wrapper))
        yield


# Keras' layers with a kernel (the layers initializers and LSUV act on).
KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
# Every one of them, and `Activation`, ends its `call` by applying its `activation`
# attribute, so that switching it off for a call gives the pre-activation. A layer of
# another class may hold an `activation` for something else: keras_hub's
# TransformerEncoder keeps its feed-forward activation there and ends with a residual
# sum and a layer norm.
_CALLS_ENDING_WITH_ACTIVATION = {cls.call for cls in (*KERNEL_LAYERS, keras.layers.Activation)}


def own_activation(layer):
    """The layer's non-linear `activation` attribute, or None (absent or linear)."""
    fn = getattr(layer, "activation", None)
    return None if not callable(fn) or fn is keras.activations.linear else fn


def has_activation(layer):
    """True when `layer` applies a non-linear `activation` attribute at the end of `call`.

    Only a layer whose `call` is one of Keras' own layers' that do (`Dense`,
    `EinsumDense`, `Activation`, the convolutions; a subclass that keeps their `call`).
    A custom `call` may use its `activation` anywhere, or not at all, and then the
    pre-activation cannot be had by switching it off; such a layer is measured by its
    output alone. Not recurrent layers and their cells: their `activation` acts inside
    the recurrence.
    """
    return own_activation(layer) is not None and type(layer).call in _CALLS_ENDING_WITH_ACTIVATION


def call_linear(layer, call, args, kwargs):
    """Run `call` with the layer's own `activation` switched off: the pre-activation.

    For a layer without one (see `has_activation`) this is the plain output.
    """
    if not has_activation(layer):
        return call(*args, **kwargs)
    with shadowing(layer, activation=keras.activations.linear):
        return call(*args, **kwargs)


def call_split(layer, call, args, kwargs):
    """Run `call` and return `(pre_activation, output)`.

    For a layer with its own `activation` (Dense, Conv, EinsumDense, Activation…) the
    activation is switched off for the call and applied afterwards, so the pre-activation
    comes for free; for any other layer both are the plain output.
    """
    pre = call_linear(layer, call, args, kwargs)
    return pre, (layer.activation(pre) if has_activation(layer) else pre)

"""`calculate_gain`: torch.nn.init's per-activation gain table, for Keras activations."""

import math
import numbers

import keras

# keras.activations.leaky_relu(x, negative_slope=0.2): the slope a Dense(activation=
# "leaky_relu") layer uses. torch.nn.init.calculate_gain defaults to 0.01 (torch's
# nn.LeakyReLU default); the activation names here are Keras', so the slope is too.
LEAKY_RELU_SLOPE = 0.2

# name -> gain; leaky_relu's depends on its slope (None here, computed below).
_GAINS = {
    "linear": 1.0,
    "identity": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    # relu6 is relu below 6; with unit-variance pre-activations (what a gain aims for)
    # the clip at 6 standard deviations touches ~1e-9 of the values: same gain.
    "relu6": math.sqrt(2.0),
    "leaky_relu": None,
    "selu": 0.75,
    # torch's names for layers without an activation, so ported code runs as is.
    **{f"conv{t}{d}d": 1.0 for t in ("", "_transpose") for d in (1, 2, 3)},
}


def _name_of(activation):
    """The Keras (or torch) name of `activation`, lower case, or None if unknown."""
    if activation is None:
        return "linear"  # `activation=None` in a Keras layer means linear
    if isinstance(activation, str):
        return activation.strip().lower()
    if isinstance(activation, keras.layers.Activation):
        activation = activation.activation
    elif isinstance(activation, keras.layers.Layer):
        return None
    if callable(activation):
        # Identity, not the function's name: a user's own `def relu` is not Keras' relu.
        for name in ("linear", "sigmoid", "tanh", "relu", "relu6", "leaky_relu", "selu"):
            if activation is keras.activations.get(name):
                return name
    return None


def calculate_gain(activation, param=None):
    """The recommended gain (weight-scale factor) for an activation function.

    The factor by which the standard deviation of the weights is multiplied so a
    layer followed by `activation` keeps the scale of its signal: the table of
    `torch.nn.init.calculate_gain`, for Keras activation names and callables.
    Use `gain**2` as the `scale` of `keras.initializers.VarianceScaling` (variance
    `gain**2 / fan`), the `gain` of `keras.initializers.Orthogonal`, or the `gain`
    of `keras_initkit.initializers.Normalized`, `Identity`, `DeltaOrthogonal`.

    | activation | gain |
    | --- | --- |
    | `"linear"`, `None`, `"identity"`, torch's `"conv1d"` ... `"conv_transpose3d"` | 1 |
    | `"sigmoid"` | 1 |
    | `"tanh"` | 5/3 |
    | `"relu"`, `"relu6"` | √2 |
    | `"leaky_relu"` | √(2 / (1 + a²)), `a = param` (default 0.2) |
    | `"selu"` | 3/4 |

    Differences from torch, all deliberate:

    - **leaky_relu's default slope is Keras' 0.2** (`keras.activations.leaky_relu`,
      the function `activation="leaky_relu"` calls), not torch's 0.01: the gain is
      for the activation your Keras layer computes. Pass `param=0.01` for torch's
      value, and `param=0.3` for a `keras.layers.LeakyReLU()` layer (whose default
      slope is 0.3; a `LeakyReLU` layer instance passed as `activation` uses its own
      `negative_slope`).
    - **relu6** (absent from torch) gets relu's √2: it only differs from relu above
      6, six standard deviations out for the unit-variance pre-activations a gain
      aims at.
    - **selu's 3/4** is torch's value, chosen for gradient flow in rectangular
      layers. Self-normalizing networks (Klambauer et al., 2017) need weights of
      variance `1 / fan_in` instead, i.e. gain 1: `keras.initializers.LecunNormal()`.

    A gain sets the scale, not the structure: for a deep tanh net with orthogonal
    weights, gain 1 (the edge of chaos with zero biases, Pennington et al., 2017)
    trains far better than 5/3, which starts it in the chaotic phase (see
    docs/choosing.md); `keras_initkit.suggest_initializer` measures this on your
    model.

    Activations with no established gain (`gelu`, `silu`/`swish`, `elu`, `softmax`,
    `softplus`, `mish`, `hard_sigmoid`, ...) raise a `ValueError` rather than
    returning a guess: for those, measure instead (`keras_initkit.lsuv_init` scales
    each layer to unit output variance on real data).

    Args:
        activation: a Keras activation name (`"relu"`), a callable from
            `keras.activations` (`keras.activations.relu`), `None` (linear), a
            `keras.layers.Activation` or `keras.layers.LeakyReLU` layer, or one of
            torch's names listed above.
        param: the negative slope of `leaky_relu`; `None` uses Keras' default of
            0.2 (a `LeakyReLU` layer: its own slope). Only `leaky_relu` takes it.
            Defaults to `None`.

    Returns:
        The gain, a Python float.

    ```python
    gain = keras_initkit.initializers.calculate_gain("tanh")  # 5/3
    initializer = keras.initializers.VarianceScaling(
        scale=gain**2, mode="fan_in", distribution="truncated_normal"
    )
    layer = keras.layers.Dense(64, activation="tanh", kernel_initializer=initializer)
    ```

    Reference:

    - [`torch.nn.init.calculate_gain`](https://pytorch.org/docs/stable/nn.init.html#torch.nn.init.calculate_gain)
    - [Glorot & Bengio, 2010](https://proceedings.mlr.press/v9/glorot10a.html)
    - [He et al., 2015](https://arxiv.org/abs/1502.01852) (relu, leaky_relu)
    - [Klambauer et al., 2017](https://arxiv.org/abs/1706.02515) (selu)
    - [Pennington et al., 2017](https://arxiv.org/abs/1711.04735) (tanh, orthogonal)
    """
    if isinstance(activation, keras.layers.LeakyReLU):
        if param is None:
            param = float(activation.negative_slope)
        activation = "leaky_relu"
    elif isinstance(activation, keras.layers.ReLU):
        plain = activation.negative_slope == 0 and activation.threshold == 0
        if not plain or activation.max_value not in (None, 6, 6.0):
            raise ValueError(
                "`calculate_gain` knows `keras.layers.ReLU` with threshold=0, "
                "negative_slope=0 and max_value None or 6. Received: ReLU("
                f"max_value={activation.max_value}, negative_slope="
                f"{activation.negative_slope}, threshold={activation.threshold})"
            )
        activation = "relu"
    name = _name_of(activation)
    if name not in _GAINS:
        known = sorted(n for n in _GAINS if not n.startswith("conv"))
        raise ValueError(
            "Argument `activation` must be an activation with an established gain: "
            f"one of {known} (a name, a `keras.activations` callable, `None` for linear, "
            "or torch's 'conv1d'...'conv_transpose3d'). Activations without one (gelu, "
            "silu/swish, elu, softmax, ...) have no table value: use "
            "`keras_initkit.lsuv_init` to scale the layers on data instead. "
            f"Received: activation={activation!r}"
        )
    if name != "leaky_relu":
        if param is not None:
            raise ValueError(
                "Argument `param` (the negative slope) only applies to 'leaky_relu'. "
                f"Received: activation={name!r}, param={param!r}"
            )
        return float(_GAINS[name])
    slope = LEAKY_RELU_SLOPE if param is None else param
    if (
        isinstance(slope, bool)
        or not isinstance(slope, numbers.Real)
        or not math.isfinite(float(slope))
    ):
        raise ValueError(
            "Argument `param` must be a finite number (leaky_relu's negative slope) or "
            f"None. Received: param={param!r}"
        )
    return math.sqrt(2.0 / (1.0 + float(slope) ** 2))

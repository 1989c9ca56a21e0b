"""`calculate_gain`: torch.nn.init's table for Keras activations."""

import inspect
import math

import keras
import numpy as np
import pytest

from keras_initkit.initializers import calculate_gain

pytestmark = pytest.mark.backend_agnostic

SQRT2 = math.sqrt(2.0)

# (activation, param, gain): the table, by name, by callable and by layer.
TABLE = [
    ("linear", None, 1.0),
    (None, None, 1.0),
    ("identity", None, 1.0),
    ("conv2d", None, 1.0),
    ("conv_transpose3d", None, 1.0),
    ("sigmoid", None, 1.0),
    ("tanh", None, 5 / 3),
    ("Tanh", None, 5 / 3),
    ("relu", None, SQRT2),
    ("relu6", None, SQRT2),
    ("selu", None, 0.75),
    ("leaky_relu", None, math.sqrt(2 / (1 + 0.2**2))),
    ("leaky_relu", 0.01, math.sqrt(2 / (1 + 0.01**2))),
    ("leaky_relu", 0, SQRT2),
    ("leaky_relu", 1, 1.0),
    (keras.activations.linear, None, 1.0),
    (keras.activations.sigmoid, None, 1.0),
    (keras.activations.tanh, None, 5 / 3),
    (keras.activations.relu, None, SQRT2),
    (keras.activations.relu6, None, SQRT2),
    (keras.activations.selu, None, 0.75),
    (keras.activations.leaky_relu, None, math.sqrt(2 / 1.04)),
    (keras.layers.Activation("tanh"), None, 5 / 3),
    (keras.layers.ReLU(), None, SQRT2),
    (keras.layers.ReLU(max_value=6.0), None, SQRT2),
    (keras.layers.LeakyReLU(), None, math.sqrt(2 / (1 + 0.3**2))),
    (keras.layers.LeakyReLU(negative_slope=0.1), None, math.sqrt(2 / 1.01)),
    (keras.layers.LeakyReLU(negative_slope=0.1), 0.5, math.sqrt(2 / 1.25)),
]


@pytest.mark.parametrize("activation, param, gain", TABLE)
def test_table(activation, param, gain):
    value = calculate_gain(activation, param)
    assert isinstance(value, float)
    assert value == pytest.approx(gain, rel=1e-12)


def test_matches_torch_where_the_defaults_agree():
    torch = pytest.importorskip("torch")
    for name in ("linear", "conv1d", "conv2d", "conv_transpose2d", "sigmoid", "tanh", "relu"):
        assert calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert calculate_gain("selu") == pytest.approx(torch.nn.init.calculate_gain("selu"))
    for slope in (0.01, 0.2, 0.3):
        expected = torch.nn.init.calculate_gain("leaky_relu", slope)
        assert calculate_gain("leaky_relu", slope) == pytest.approx(expected)


def test_leaky_relu_default_slope_is_keras_own():
    # the slope `activation="leaky_relu"` computes with, not torch's 0.01
    default = inspect.signature(keras.activations.leaky_relu).parameters["negative_slope"].default
    assert calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + default**2)))


@pytest.mark.parametrize(
    "activation",
    ["gelu", "silu", "swish", "elu", "softmax", "softplus", "mish", "hard_sigmoid", "nope"],
)
def test_no_established_gain_is_a_clear_error(activation):
    with pytest.raises(ValueError, match=r"established gain.*Received: activation='"):
        calculate_gain(activation)


@pytest.mark.parametrize(
    "activation",
    [
        keras.activations.gelu,
        keras.activations.silu,
        lambda x: x,
        keras.layers.Dense(2),
        keras.layers.ReLU(threshold=0.5),
        3,
    ],
)
def test_unknown_callables_layers_and_objects_are_errors(activation):
    with pytest.raises(ValueError, match="Received"):
        calculate_gain(activation)


def test_a_function_named_relu_is_not_keras_relu():
    def relu(x):
        return x

    with pytest.raises(ValueError, match="established gain"):
        calculate_gain(relu)


@pytest.mark.parametrize("param", [True, "0.1", float("nan"), float("inf"), [0.1]])
def test_bad_slope(param):
    with pytest.raises(ValueError, match=r"`param` must be a finite number.*Received: param="):
        calculate_gain("leaky_relu", param)


def test_param_only_for_leaky_relu():
    with pytest.raises(ValueError, match=r"only applies to 'leaky_relu'.*activation='relu'"):
        calculate_gain("relu", 0.1)


def test_variance_scaling_from_gain_keeps_the_signal_scale():
    """The documented recipe: `scale=gain**2` keeps a deep net's signal scale."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 256)).astype("float32")
    for activation, depth in (("relu", 10), ("linear", 10)):
        gain = calculate_gain(activation)
        model = keras.Sequential([keras.Input((256,))])
        for seed in range(depth):  # one seed per layer: an int seed repeats its values
            init = keras.initializers.VarianceScaling(
                scale=gain**2, mode="fan_in", distribution="truncated_normal", seed=seed
            )
            model.add(keras.layers.Dense(256, activation=activation, kernel_initializer=init))
        out = keras.ops.convert_to_numpy(model(x))
        # relu: mean square kept (He); linear: variance kept
        assert 0.5 < float(np.mean(out**2)) < 2.0

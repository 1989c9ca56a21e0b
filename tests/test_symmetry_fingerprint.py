"""symmetric_units: fingerprints (wrapping integer sums) on the device or the host, exact
comparison on collision. Every case runs both ways (`count`)."""

import functools

import keras
import numpy as np
import pytest

from keras_initkit.checks import symmetry
from keras_initkit.checks.symmetry import symmetric_units, symmetric_units_batch

RNG = np.random.default_rng(0)


@pytest.fixture(params=[True, False], ids=["device", "host"])
def count(request):
    """`symmetric_units` with the fingerprints computed on the device, or on the host."""
    return functools.partial(symmetric_units, on_device=request.param)


def _built(layer, input_shape):
    layer.build(input_shape)
    return layer


def _random(shape, dtype="float32"):
    return RNG.normal(size=shape).astype(dtype)


def _dense(kernel, bias=None, dtype="float32"):
    layer = _built(keras.layers.Dense(kernel.shape[1], dtype=dtype), (None, kernel.shape[0]))
    layer.kernel.assign(kernel.astype(dtype))
    if bias is not None:
        layer.bias.assign(np.asarray(bias, dtype))
    return layer


@pytest.mark.parametrize("fan_in", [5, 6])  # odd and even fan-in: two ways to sum the halves
def test_dense_with_two_identical_columns(fan_in, count):
    kernel = _random((fan_in, 4))
    kernel[:, 3] = kernel[:, 1]
    assert count(_dense(kernel)) == (2, 4)


def test_conv2d_with_identical_filters(count):
    conv = _built(keras.layers.Conv2D(5, 3), (None, 8, 8, 3))
    kernel = _random((3, 3, 3, 5))
    kernel[..., 4] = kernel[..., 0]
    kernel[..., 2] = kernel[..., 0]
    conv.kernel.assign(kernel)
    assert count(conv) == (3, 5)


def test_conv2d_transpose_units_are_the_second_last_axis(count):
    conv = _built(keras.layers.Conv2DTranspose(4, 3), (None, 8, 8, 3))
    kernel = _random((3, 3, 4, 3))  # (rows, cols, filters, input channels)
    kernel[:, :, 2, :] = kernel[:, :, 0, :]
    conv.kernel.assign(kernel)
    assert count(conv) == (2, 4)
    kernel = _random((3, 3, 4, 3))
    kernel[..., 2] = kernel[..., 0]  # equal input channels: no two units are equal
    conv.kernel.assign(kernel)
    assert count(conv) == (0, 4)


def test_separable_conv_is_judged_by_its_pointwise_kernel(count):
    conv = _built(keras.layers.SeparableConv2D(4, 3), (None, 8, 8, 3))
    pointwise = _random((1, 1, 3, 4))
    pointwise[..., 3] = pointwise[..., 1]
    conv.pointwise_kernel.assign(pointwise)
    assert count(conv) == (2, 4)


def test_negative_zero_equals_zero(count):
    kernel = np.abs(_random((6, 3))) + 0.1  # positive: the only sign bits are the zeros
    kernel[:, 0] = kernel[:, 2]
    kernel[[1, 4], 0] = 0.0
    kernel[[1, 4], 2] = -0.0  # other bits, same value
    kernel[2, 0] = kernel[2, 2] = 0.0
    kernel[3, 0], kernel[3, 2] = -0.0, 0.0  # an odd number of sign differences too
    assert np.signbit(kernel[:, 2]).sum() == 2 and np.signbit(kernel[:, 0]).sum() == 1
    assert count(_dense(kernel)) == (2, 3)
    assert count(_dense(kernel, bias=[0.0, 1.0, -0.0])) == (2, 3)


def test_equal_kernels_with_different_bias_are_not_symmetric(count):
    kernel = np.repeat(_random((4, 1)), 3, axis=1)
    assert count(_dense(kernel)) == (3, 3)
    assert count(_dense(kernel, bias=[0.0, 0.1, 0.2])) == (0, 3)
    assert count(_dense(kernel, bias=[0.0, 0.1, 0.0])) == (2, 3)


def test_all_zero_kernel_makes_every_unit_symmetric(count):
    assert count(_dense(np.zeros((7, 5)))) == (5, 5)
    conv = _built(keras.layers.Conv2D(3, 2, kernel_initializer="zeros"), (None, 4, 4, 2))
    assert count(conv) == (3, 3)


def test_random_kernels_have_no_symmetric_units(count):
    assert count(_dense(_random((64, 128)))) == (0, 128)
    conv = _built(keras.layers.Conv2D(64, 3, kernel_initializer="he_normal"), (None, 8, 8, 32))
    assert count(conv) == (0, 64)


def test_float16_kernel(count):
    kernel = _random((6, 4), "float16")
    kernel[:, 3] = kernel[:, 0]
    assert count(_dense(kernel, dtype="float16")) == (2, 4)


def test_layers_that_are_not_judged(count):
    depthwise = _built(keras.layers.DepthwiseConv2D(3), (None, 8, 8, 3))
    one_unit = _built(keras.layers.Dense(1), (None, 4))
    no_kernel = keras.layers.ReLU()
    assert count(depthwise) is None
    assert count(one_unit) is None
    assert count(no_kernel) is None
    assert symmetric_units_batch([depthwise, one_unit, no_kernel]) == [None, None, None]


def test_integer_sums_wrap_around_identically():
    # Bit patterns near the int32 limits: their sums overflow, on every backend alike.
    kernel = np.array([[3.0e38, -3.0e38], [3.1e38, -3.1e38], [-1e-38, 1e-38]] * 4, "float32")
    bits = kernel.view(np.int32).astype(np.int64)
    expected = np.stack([bits[:6].sum(0), bits[6:].sum(0), np.zeros(2, np.int64)])
    expected = ((expected + 2**31) % 2**32 - 2**31).astype(np.int32)  # int32 wrap-around
    layer = _dense(kernel)
    fingerprints = symmetry._fingerprints(layer.kernel, -1, None)
    assert np.array_equal(keras.ops.convert_to_numpy(fingerprints).astype(np.int32), expected)
    assert np.array_equal(symmetry._host_fingerprints(kernel, -1, None), expected)
    assert np.abs(bits[:6].sum(0)).max() > 2**31  # they did overflow


@pytest.mark.parametrize(
    "shape, axis, dtype",
    [
        ((5, 4), -1, "float32"),
        ((3, 3, 6, 8), -1, "float32"),
        ((3, 3, 4, 7), -2, "float32"),
        ((6, 3), -1, "float16"),
    ],
)
def test_host_and_device_fingerprints_are_the_same_integers(shape, axis, dtype):
    kernel = _random(shape, dtype)
    kernel.flat[::3] = -0.0
    bias = _random((shape[axis],), dtype)
    for b in (None, bias):
        device = symmetry._fingerprints(
            keras.ops.convert_to_tensor(kernel),
            axis,
            None if b is None else keras.ops.convert_to_tensor(b),
        )
        device = keras.ops.convert_to_numpy(device).astype(np.int64) & 0x7FFFFFFF
        host = symmetry._host_fingerprints(kernel, axis, b).astype(np.int64) & 0x7FFFFFFF
        assert host.shape == (3, shape[axis]) and np.array_equal(host, device)


def test_fingerprints_are_computed_on_the_host_where_the_weights_are():
    """On a CPU the weights are in host memory: NumPy reads them without a transfer or
    a compile (under JAX, compiling the device fingerprints of ResNet50 took 0.7 s)."""
    from keras_initkit.probe import backend

    layer = _dense(_random((4, 3)))
    assert backend.current().on_host(keras.ops.convert_to_tensor(layer.kernel))


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="int64 needs jax_enable_x64")
def test_int64_sums_give_the_same_answers(monkeypatch, count):
    # TensorFlow sums in int64 on a GPU; here it is forced on the CPU.
    kernel = np.array([[3.0e38, -3.0e38, 3.0e38], [3.1e38, 0.0, 3.1e38], [1.0, -0.0, -0.0]])
    narrow = symmetry._fingerprints(_dense(kernel).kernel, -1, None)
    monkeypatch.setattr(symmetry, "_wide", lambda bits: True)
    wide = symmetry._fingerprints(_dense(kernel).kernel, -1, None)
    assert keras.backend.standardize_dtype(wide.dtype) == "int64"
    narrow, wide = (keras.ops.convert_to_numpy(f).astype(np.int64) for f in (narrow, wide))
    assert np.array_equal(narrow & 0x7FFFFFFF, wide & 0x7FFFFFFF)
    assert count(_dense(kernel)) == (0, 3)
    kernel[2, 0] = 0.0
    assert count(_dense(kernel)) == (2, 3)
    assert count(_dense(kernel, bias=[0.0, 0.0, -0.0])) == (2, 3)


def test_batch_equals_per_layer_on_a_conv_net(count):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, kernel_initializer="zeros"),
            keras.layers.Conv2D(8, 3),
            keras.layers.DepthwiseConv2D(3),
            keras.layers.SeparableConv2D(6, 3),
            keras.layers.Conv2DTranspose(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    conv = model.layers[1]
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    kernel[..., 5] = kernel[..., 2]
    conv.kernel.assign(kernel)
    per_layer = [count(layer) for layer in model.layers]
    assert symmetric_units_batch(model.layers) == per_layer
    assert per_layer == [(8, 8), (2, 8), None, (0, 6), (0, 4), None, (0, 10)]


def test_colliding_fingerprints_are_judged_exactly(monkeypatch, count):
    def constant(kernel, axis, bias):
        return keras.ops.zeros((3, kernel.shape[axis]), "int32")

    monkeypatch.setattr(symmetry, "_fingerprints", constant)
    monkeypatch.setattr(
        symmetry, "_host_fingerprints", lambda k, axis, b: np.zeros((3, k.shape[axis]), np.int32)
    )
    kernel = _random((6, 5))
    assert count(_dense(kernel)) == (0, 5)
    kernel[:, 4] = kernel[:, 1]
    kernel[:, 3] = kernel[:, 0]
    assert count(_dense(kernel)) == (4, 5)
    assert count(_dense(kernel, bias=[0, 0, 0, 1, 0])) == (2, 5)


def _stack(initializers, widths=(6, 6, 6), names=("a", "b", "c")):
    """A functional stack of Dense layers (inputs of width 6), one initializer each."""
    inputs = keras.Input((6,))
    h = inputs
    for width, initializer, name in zip(widths, initializers, names):
        h = keras.layers.Dense(width, kernel_initializer=initializer, name=name)(h)
    return keras.Model(inputs, h)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("seed", [None, 7])
@pytest.mark.parametrize("on_device", [True, False], ids=["device", "host"])
def test_one_random_initializer_instance_gives_identical_kernels(seed, on_device):
    shared = keras.initializers.RandomNormal(seed=seed)
    model = _stack([shared, shared, shared], widths=(6, 6, 4))
    groups = symmetry.identical_kernels(model.layers[1:], on_device=on_device)
    # c's kernel is (6, 4): another shape, another draw
    assert [[layer.name for layer in group] for group in groups] == [["a", "b"]]


@pytest.mark.backend_agnostic
def test_kernels_that_are_not_identical_kernels():
    layers = _stack(["he_normal", "he_normal", "he_normal"]).layers[1:]  # a new instance each
    assert symmetry.identical_kernels(layers) == []
    identity = keras.initializers.Identity()  # equal by design: no seed, not judged
    assert symmetry.identical_kernels(_stack([identity] * 3).layers[1:]) == []
    shared = keras.initializers.GlorotUniform()
    model = _stack([shared, shared, "zeros"])
    b = model.get_layer("b")
    assert len(symmetry.identical_kernels(model.layers[1:])) == 1
    kernel = keras.ops.convert_to_numpy(b.kernel).copy()
    kernel[0, 0] = np.nextafter(kernel[0, 0], np.float32(2))
    b.kernel.assign(kernel)  # one value a float32 step apart: not equal
    assert symmetry.identical_kernels(model.layers[1:]) == []


@pytest.mark.backend_agnostic
def test_a_layer_called_twice_is_one_kernel():
    dense = keras.layers.Dense(6, kernel_initializer=keras.initializers.RandomNormal())
    inputs = keras.Input((6,))
    model = keras.Model(inputs, dense(dense(inputs)))
    assert symmetry.identical_kernels([dense, dense]) == []
    assert symmetry.identical_kernels(model.layers[1:]) == []


def test_colliding_kernel_fingerprints_are_compared_exactly(monkeypatch):
    # every kernel gets one fingerprint: only the exact comparison tells them apart
    monkeypatch.setattr(
        symmetry,
        "_host_fingerprints",
        lambda kernel, axis, bias: np.zeros((3, kernel.shape[axis]), np.int32),
    )
    shared = keras.initializers.RandomNormal()
    model = _stack([shared, shared, keras.initializers.RandomNormal()])
    groups = symmetry.identical_kernels(model.layers[1:], on_device=False)
    assert [[layer.name for layer in group] for group in groups] == [["a", "b"]]

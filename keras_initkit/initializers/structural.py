"""Structural initializers: identity-like matrices, placed at a conv's centre tap."""

import keras
from keras import ops

from keras_initkit.initializers._utils import (
    centre_tap,
    check_seed,
    check_shape,
    compute_dtype,
    float_dtype,
    positive_float,
)


@keras.saving.register_keras_serializable(package="keras_initkit")
class Identity(keras.initializers.Initializer):
    """Identity kernel for dense, recurrent and conv layers (Dirac for convs).

    A rank-2 kernel `(in, out)` is `gain * eye(in, out)`, like
    `keras.initializers.Identity`: a partial identity when not square, input
    unit `i` feeding output unit `i` for `i < min(in, out)`. A conv kernel
    `(k..., in, out)` of rank 3 to 5 is a Dirac kernel: that matrix at the
    centre tap `(k - 1) // 2` of every spatial axis and zeros elsewhere, so a
    `Conv1D`/`Conv2D`/`Conv3D` with `padding="same"` and `in == out` is exactly
    `gain` times the identity map, for odd and even kernel sizes alike.

    Use it to start a deep plain (non-residual) net as a stack of identity
    maps, or as the `recurrent_initializer` of a `SimpleRNN` with ReLU: the
    IRNN recipe of Le et al. (2015). A rank-2 kernel whose width is a whole
    multiple `g >= 2` of its height, such as an LSTM (`g = 4`) or GRU (`g = 3`)
    recurrent kernel `(units, g * units)`, gets `eye(units)` in each of its `g`
    column blocks, so every gate sees the previous state unchanged (Keras'
    `Identity` would fill the first gate only).

    A `DepthwiseConv2D` kernel `(k, k, channels, multiplier)` is not an
    `(in, out)` matrix: each input channel has its own `multiplier` filters.
    With `depthwise=True` every one of them is `gain` at the centre tap, so the
    layer (`padding="same"`, `depth_multiplier=1`) is `gain` times the identity
    map; the partial identity would keep channel 0 and zero the others.

    Args:
        gain: Multiplicative factor applied to the identity. Defaults to `1.0`.
        depthwise: the kernel is a depthwise conv's (`depthwise_initializer` of
            `DepthwiseConv1D/2D` and `SeparableConv1D/2D`). Defaults to `False`.

    ```python
    layer = keras.layers.Conv2D(
        16, 3, padding="same",
        kernel_initializer=keras_initkit.initializers.Identity(),
    )
    depthwise = keras.layers.DepthwiseConv2D(
        3, padding="same",
        depthwise_initializer=keras_initkit.initializers.Identity(depthwise=True),
    )
    ```

    Reference:

    - [Le et al., 2015](https://arxiv.org/abs/1504.00941)
    - [Zagoruyko & Komodakis, 2017](https://arxiv.org/abs/1706.00388)
    """

    def __init__(self, gain=1.0, depthwise=False):
        self.gain = positive_float("gain", gain)
        if not isinstance(depthwise, bool):
            raise ValueError(
                f"Argument `depthwise` must be a bool. Received: depthwise={depthwise!r}"
            )
        self.depthwise = depthwise

    def __call__(self, shape, dtype=None):
        dtype = float_dtype(dtype)
        if self.depthwise:
            shape = check_shape(
                "Identity(depthwise=True)",
                shape,
                3,
                5,
                " A depthwise kernel is (k..., channels, multiplier).",
            )
            return centre_tap(ops.full(shape[-2:], self.gain, dtype=dtype), shape)
        shape = check_shape("Identity", shape, 2, 5)
        n_in, n_out = shape[-2:]
        if len(shape) == 2 and 0 < n_in < n_out and n_out % n_in == 0:
            eye = ops.tile(ops.eye(n_in, dtype=dtype), (1, n_out // n_in))
        else:
            eye = ops.eye(n_in, n_out, dtype=dtype)
        return centre_tap(self.gain * eye, shape)

    def get_config(self):
        config = {**super().get_config(), "gain": self.gain}
        if self.depthwise:  # configs saved before the argument stay as they were
            config["depthwise"] = True
        return config


@keras.saving.register_keras_serializable(package="keras_initkit")
class DeltaOrthogonal(keras.initializers.Initializer):
    """Delta-orthogonal conv kernel: a random orthogonal matrix at the centre tap.

    For a conv kernel `(k..., in, out)` with `in <= out` it draws a uniformly
    (Haar) distributed `Q` of shape `(in, out)` with orthonormal rows, so that
    `Q Qᵀ = gain² I`, and places `gain * Q` at the centre tap `(k - 1) // 2` of
    every spatial axis, zeros elsewhere. A `padding="same"` conv with
    `in == out` then maps every input to one of exactly the same norm (times
    `gain`): dynamical isometry at initialization, which lets plain CNNs of
    thousands of layers train (Xiao et al., 2018). For dense kernels use
    `keras.initializers.Orthogonal`.

    Args:
        gain: Multiplicative factor applied to the orthogonal matrix. Defaults
            to `1.0`.
        seed: An int, a `keras.random.SeedGenerator` or None. An int gives the
            same values on every call, a `SeedGenerator` new values on every
            call, None new random values on every call. Defaults to `None`.

    ```python
    layer = keras.layers.Conv2D(
        64, 3, padding="same", activation="tanh",
        kernel_initializer=keras_initkit.initializers.DeltaOrthogonal(seed=0),
    )
    ```

    Reference:

    - [Xiao et al., 2018](https://arxiv.org/abs/1806.05393)
    - [Saxe et al., 2014](https://arxiv.org/abs/1312.6120)
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = positive_float("gain", gain)
        self.seed = check_seed(seed)

    def __call__(self, shape, dtype=None):
        dtype = float_dtype(dtype)
        hint = " For a rank-2 kernel use `keras.initializers.Orthogonal`."
        shape = check_shape("DeltaOrthogonal", shape, 3, 5, hint=hint)
        n_in, n_out = shape[-2:]
        if n_in > n_out:
            raise ValueError(
                "`DeltaOrthogonal` needs at most as many input as output channels "
                "(an orthogonal matrix has at most `out` orthonormal rows), read as Conv* "
                "lays its kernel out, (..., in, out); a Conv*Transpose kernel is "
                "(..., out, in), a layout it does not take. "
                f"Received: shape={shape} with in={n_in} > out={n_out}"
            )
        a = keras.random.normal((n_out, n_in), dtype=compute_dtype(dtype), seed=self.seed)
        q, r = ops.qr(a)  # q: (out, in) with orthonormal columns
        q = q * ops.sign(ops.diagonal(r))  # sign fix makes Q Haar-distributed
        return centre_tap(ops.cast(self.gain * ops.transpose(q), dtype), shape)

    def get_config(self):
        return {
            **super().get_config(),
            "gain": self.gain,
            "seed": keras.saving.serialize_keras_object(self.seed),
        }


@keras.saving.register_keras_serializable(package="keras_initkit")
class ZerO(keras.initializers.Initializer):
    """Deterministic ZerO kernel of zeros, ones and a scaled Hadamard matrix.

    Algorithm 1 of Zhao et al. (2021), in Keras' `(in, out)` kernel layout
    (the paper writes `W` as `(out, in)`; this kernel is its transpose):

    - `in == out`: the identity;
    - `in > out` (narrowing): the partial identity `eye(in, out)`;
    - `in < out` (widening): `c * H[:in, :out]` with `m = ceil(log2(out))`,
      `H` the `2^m x 2^m` Sylvester Hadamard matrix
      (`H[i, j] = (-1)^popcount(i & j)`) and `c = 2^(-(m - 1) / 2)`. `H` is
      symmetric, so this is the paper's `c * H[:out, :in]` transposed. When
      `out` is a power of two the rows are orthogonal with `K Kᵀ = 2 I`.

    A conv kernel `(k..., in, out)` gets that matrix at the centre tap
    `(k - 1) // 2` of every spatial axis, zeros elsewhere. No randomness and no
    seed: every run starts from the same weights. Use it for reproducible
    training of deep residual or plain nets without random init (the paper
    pairs it with zero-initialized residual branches).

    ```python
    layer = keras.layers.Dense(
        256, kernel_initializer=keras_initkit.initializers.ZerO()
    )
    ```

    Reference:

    - [Zhao et al., 2021](https://arxiv.org/abs/2110.12661)
    """

    def __call__(self, shape, dtype=None):
        dtype = float_dtype(dtype)
        shape = check_shape("ZerO", shape, 2, 5)
        n_in, n_out = shape[-2:]
        if n_in >= n_out:
            return centre_tap(ops.eye(n_in, n_out, dtype=dtype), shape)
        m = (n_out - 1).bit_length()  # ceil(log2(out))
        i_and_j = ops.bitwise_and(
            ops.arange(n_in, dtype="int32")[:, None],
            ops.arange(n_out, dtype="int32")[None, :],
        )
        parity = ops.zeros_like(i_and_j)
        for b in range(m):
            parity = ops.bitwise_xor(parity, ops.bitwise_and(ops.right_shift(i_and_j, b), 1))
        hadamard = ops.cast(1 - 2 * parity, dtype)
        return centre_tap(2.0 ** (-(m - 1) / 2) * hadamard, shape)

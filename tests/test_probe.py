"""The probe engine: interception, layer selection, data handling, reductions."""

import contextlib

import keras
import numpy as np
import pytest

import keras_initkit
from keras_initkit import probe
from keras_initkit.probe import backend
from keras_initkit.probe import engine as engine_module
from keras_initkit.probe.gradients import GradientProbe

ALL_REDUCERS = [
    probe.ActivationMoments(),
    probe.Saturation(),
    probe.DeadUnits(),
    probe.BatchNormStatistics(),
    probe.ActivationSample(),
]


def _x(n=64, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def _mlp(activation="tanh", depth=3, width=16, d=8):
    inp = keras.Input((d,))
    h = inp
    for _ in range(depth):
        h = keras.layers.Dense(width, activation=activation)(h)
    return keras.Model(inp, keras.layers.Dense(2)(h))


def _snapshot(model):
    return [np.array(v.numpy()) for v in model.variables]


def _assert_same(before, model):
    after = _snapshot(model)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# Interception -------------------------------------------------------------------------


@pytest.mark.backend_agnostic
def test_intercept_sees_actual_inputs_and_restores():
    model = _mlp()
    x = _x()
    seen = {}

    def hook(layer, call, args, kwargs):
        seen[layer.name] = keras.ops.convert_to_numpy(args[0])
        return call(*args, **kwargs)

    layers = model.layers[1:]
    with probe.intercept(layers, hook):
        out = model(x)
    np.testing.assert_allclose(seen[layers[0].name], x)
    # The second layer's input is the first layer's output.
    np.testing.assert_allclose(
        seen[layers[1].name], keras.ops.convert_to_numpy(layers[0](x)), rtol=1e-6
    )
    assert all("call" not in layer.__dict__ for layer in layers)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(out)
    )


@pytest.mark.backend_agnostic
def test_intercept_restores_when_forward_raises():
    model = _mlp()
    target = model.layers[2]

    def hook(layer, call, args, kwargs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with probe.intercept([target], hook):
            model(_x())
    assert "call" not in target.__dict__
    model(_x())  # still works


def test_intercept_nests():
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    log = []

    def outer(lyr, call, args, kwargs):
        log.append("outer")
        return call(*args, **kwargs)

    def inner(lyr, call, args, kwargs):
        log.append("inner")
        return call(*args, **kwargs)

    with probe.intercept([layer], outer):
        with probe.intercept([layer], inner):
            layer(np.ones((1, 2), "float32"))
        assert layer.__dict__["call"] is not None
        layer(np.ones((1, 2), "float32"))
    assert log == ["inner", "outer", "outer"]
    assert "call" not in layer.__dict__


@pytest.mark.backend_agnostic
def test_call_split_gives_pre_activation():
    layer = keras.layers.Dense(4, activation="relu")
    x = _x(8, 3)
    layer.build(x.shape)
    pre, out = map(keras.ops.convert_to_numpy, probe.call_split(layer, layer.call, (x,), {}))
    expected = x @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(pre, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, np.maximum(expected, 0), rtol=1e-5, atol=1e-6)
    assert layer.activation is keras.activations.relu


# Selection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, name, kind",
    [
        (keras.layers.Dense(2, activation="tanh"), "tanh", "bounded"),
        (keras.layers.Dense(2, activation="sigmoid"), "sigmoid", "bounded"),
        (keras.layers.Activation("softsign"), "softsign", "bounded"),
        (keras.layers.Conv2D(2, 3, activation="relu"), "relu", "dead"),
        (keras.layers.ReLU(), "relu", "dead"),
        (keras.layers.ReLU(max_value=6.0), "relu6", "dead"),
        (keras.layers.ReLU(negative_slope=0.1), "leaky_relu", "inactive"),
        (keras.layers.LeakyReLU(), "leaky_relu", "inactive"),
        (keras.layers.ELU(), "elu", "inactive"),
        (keras.layers.Dense(2, activation="gelu"), "gelu", None),
        (keras.layers.Dense(2), None, None),
        (keras.layers.BatchNormalization(), None, None),
    ],
)
def test_activation_classification(layer, name, kind):
    model = keras.Sequential([keras.Input((4, 4, 2)), layer])
    (site,) = probe.make_sites(model, [layer])
    assert site.activation == name
    assert site.kind == kind


class _ResidualBlock(keras.layers.Layer):
    """Keeps an `activation` for its inner layer and ends with a residual sum, as
    keras_hub's TransformerEncoder does: its output is not `activation(...)`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get("relu")
        self.inner = keras.layers.Dense(8, activation=self.activation)
        self.out = keras.layers.Dense(8)

    def call(self, x):
        return x + self.out(self.inner(x))


class _PlainDense(keras.layers.Dense):
    """A Dense subclass that keeps Dense's `call`."""


class _OwnDense(keras.layers.Layer):
    """A custom layer without sublayers that ends with its `activation`."""

    def __init__(self, units, activation, **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation = units, keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):
        return self.activation(x @ self.kernel)


@pytest.mark.backend_agnostic
def test_an_activation_attribute_counts_only_where_keras_applies_it_at_the_end():
    inputs = keras.Input((8,))
    block = _ResidualBlock(name="block")
    h = block(inputs)
    plain = _PlainDense(8, activation="tanh", name="plain")
    own = _OwnDense(8, "relu", name="own")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(own(plain(h))))
    assert not probe.has_activation(block) and probe.activation_name(block) is None
    assert probe.has_activation(plain) and probe.activation_name(plain) == "tanh"
    # Classified by its activation, measured on its output as its own call computes it.
    assert not probe.has_activation(own) and probe.activation_name(own) == "relu"
    x = _x(32, 8)
    # The probe's pass computes what the model computes.
    grads = GradientProbe(model, loss="mse", forward=probe.Probe(model, ALL_REDUCERS))
    y = np.zeros((32, 2), "float32")
    result = grads.run((x, y))
    expected = keras.ops.convert_to_numpy(model(x))
    assert result.loss == pytest.approx(float(np.mean(expected**2)), rel=1e-5)
    inner = keras.Model(inputs, h)
    block_out = keras.ops.convert_to_numpy(inner(x))
    plain_out = keras.ops.convert_to_numpy(plain(block_out))
    std = result.forward.metrics["plain"]["activation_std"]
    assert std == pytest.approx(plain_out.std(), rel=1e-4)
    assert "saturated_fraction" in result.forward.metrics["plain"]  # judged as tanh
    own_out = keras.ops.convert_to_numpy(own(plain_out))
    rate = result.forward.metrics["own"]["unit_firing_rate"]
    np.testing.assert_allclose(rate, (own_out > 0).mean(axis=0), atol=1e-6)


def test_keras_hub_transformer_blocks_keep_their_output():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(50, 16)(inputs)
    h = keras_hub.layers.TransformerEncoder(32, 2)(h)
    h = keras_hub.layers.TransformerEncoder(32, 2)(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h)))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, (16, 6)).astype("int32"), rng.integers(0, 3, 16)
    report = keras_initkit.diagnose(model, x, y)
    logits = keras.ops.convert_to_numpy(model(x))
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    assert report.loss == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("model", ["model", None, keras.layers.Dense(2)])
def test_every_entry_point_rejects_what_is_not_a_model(model):
    """`diagnose("model", x)`, `lsuv_init(None, x)`: AttributeError: 'str' object has no
    attribute 'built'."""
    x = np.zeros((4, 3), "float32")
    for call in (
        keras_initkit.diagnose,
        keras_initkit.lsuv_init,
        keras_initkit.recalibrate_batchnorm,
        keras_initkit.suggest_initializer,
    ):
        with pytest.raises(
            ValueError, match=r"^Argument `model` must be a `keras.Model`\. Received: model of type"
        ):
            call(model, x)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8"])
def test_every_entry_point_rejects_a_bad_batch_size(batch_size):
    """`diagnose` and `recalibrate_batchnorm` said "range() arg 3 must not be zero" for
    0 and "yielded no batches ... an empty dataset" for -3."""
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()]
    )
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    calls = (
        lambda: keras_initkit.diagnose(model, x, batch_size=batch_size),
        lambda: keras_initkit.recalibrate_batchnorm(model, x, batch_size=batch_size),
        lambda: keras_initkit.callbacks.TrainingMonitor(x, batch_size=batch_size),
        lambda: probe.as_batches(x, batch_size=batch_size),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"Argument `batch_size` must be a positive int"):
            call()


def test_a_dict_missing_an_input_names_it():
    """keras_hub-style dict inputs: a missing key said "must hold one array per model
    input (3). Received: 2 array(s)", leaving the user to guess which."""
    inputs = [keras.Input((4,), name=name) for name in ("token_ids", "padding_mask", "extra")]
    model = keras.Model(inputs, keras.layers.Add()(inputs))
    x = {"token_ids": np.zeros((2, 4)), "extra": np.zeros((2, 4))}
    with pytest.raises(
        ValueError,
        match=r"an array for each model input \['token_ids', 'padding_mask', 'extra'\]: "
        r"\['padding_mask'\] missing\. Received: a dict with keys \['extra', 'token_ids'\]",
    ):
        keras_initkit.diagnose(model, x)
    x["padding_mask"] = np.zeros((2, 4))
    probe.check_inputs(model, [(x, None)])


def test_resolve_layers_errors():
    model = _mlp()
    with pytest.raises(ValueError, match="Received: 'nope'"):
        probe.resolve_layers(model, ["nope"])
    with pytest.raises(ValueError, match="Received: 3"):
        probe.resolve_layers(model, [3])
    stranger = keras.layers.Dense(2)
    with pytest.raises(ValueError, match="not part of the model"):
        probe.resolve_layers(model, [stranger])
    first = model.layers[1]
    assert probe.resolve_layers(model, first.name) == [first]


def test_duplicate_names_in_nested_models_are_prefixed():
    def block(name):
        inp = keras.Input((4,))
        return keras.Model(inp, keras.layers.Dense(4, activation="relu", name="d")(inp), name=name)

    inp = keras.Input((4,))
    model = keras.Model(inp, block("b2")(block("b1")(inp)))
    result = probe.Probe(model, [probe.DeadUnits()]).run(_x(16, 4))
    assert set(result.metrics) == {"b1/d", "b2/d"}


class _Block(keras.layers.Layer):
    """A Transformer-like block: its attention layer has the same name in every block,
    and so have the attention layer's own sublayers (`query`, `key`, ...)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attn = keras.layers.MultiHeadAttention(2, 4, name="attn")
        self.ff = keras.layers.Dense(8, activation="relu", name="ff")

    def call(self, x):
        return self.ff(x + self.attn(x, x))


class _Twins(keras.layers.Layer):
    """Two sublayers of one layer given the same name."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(8, activation="tanh", name="proj")
        self.second = keras.layers.Dense(8, activation="tanh", name="proj")

    def call(self, x):
        return self.second(self.first(x))


def _blocks():
    inp = keras.Input((5, 8))
    h = _Twins(name="twins")(_Block(name="b1")(_Block(name="b0")(inp)))
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h))


@pytest.mark.backend_agnostic
def test_names_are_unique_when_enclosing_layers_share_names():
    model = _blocks()
    layers = probe.resolve_layers(model)
    names = probe.site_names(model, layers)
    assert len(set(names)) == len(names)
    for block in ("b0", "b1"):
        for part in ("query", "key", "value", "attention_output"):
            assert f"{block}/attn/{part}" in names
        assert f"{block}/attn" in names and f"{block}/ff" in names
    assert "twins/proj" in names and "twins/proj#2" in names
    assert "head" in names  # a name no other layer has stays as it is
    # A layer's name does not depend on the selection.
    query = model.get_layer("b1").attn.query_dense
    (site,) = probe.make_sites(model, [query])
    assert site.name == "b1/attn/query"


@pytest.mark.backend_agnostic
def test_layers_of_the_same_name_are_all_measured():
    model = _blocks()
    x = np.random.default_rng(0).normal(size=(16, 5, 8)).astype("float32")
    result = probe.Probe(model, [probe.ActivationMoments()]).run(x)
    b0 = model.get_layer("b0").attn.query_dense
    b1 = model.get_layer("b1").attn.query_dense
    # Each one measured on its own input: NumPy's moments of what it computed.
    inner = keras.Model(model.input, model.get_layer("b0").output)
    expected = keras.ops.convert_to_numpy(b1(inner(x)))
    assert result.metrics["b1/attn/query"]["activation_std"] == pytest.approx(
        expected.std(), rel=1e-4
    )
    expected = keras.ops.convert_to_numpy(b0(x))
    assert result.metrics["b0/attn/query"]["activation_std"] == pytest.approx(
        expected.std(), rel=1e-4
    )
    assert result.metrics["twins/proj"] != result.metrics["twins/proj#2"]


@pytest.mark.backend_agnostic
def test_resolve_layers_by_display_name_and_ambiguous_names():
    model = _blocks()
    b1_query = model.get_layer("b1").attn.query_dense
    assert probe.resolve_layers(model, ["b1/attn/query"]) == [b1_query]
    assert probe.resolve_layers(model, "head") == [model.get_layer("head")]
    with pytest.raises(ValueError, match=r"2 layers of the model are named 'query'") as error:
        probe.resolve_layers(model, ["query"])
    assert "b0/attn/query" in str(error.value) and "b1/attn/query" in str(error.value)
    assert "Received: 'query'" in str(error.value)
    with pytest.raises(ValueError, match=r"available: .*b1/attn/query.*Received: 'b2/attn/query'"):
        probe.resolve_layers(model, ["b2/attn/query"])


# Models of every shape ----------------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.a = keras.layers.Dense(8, activation="relu")
        self.shared = keras.layers.Dense(8, activation="tanh")
        self.out = keras.layers.Dense(2)

    def call(self, x):
        h = self.shared(self.a(x))
        return self.out(self.shared(h))  # `shared` is called twice


def _functional_branches():
    a, b = keras.Input((8,), name="a"), keras.Input((6,), name="b")
    ha = keras.layers.Dense(8, activation="relu", name="ha")(a)
    hb = keras.layers.Dense(8, activation="tanh", name="hb")(b)
    res = keras.layers.Add()([ha, keras.layers.Dense(8, name="skip")(ha)])
    cat = keras.layers.Concatenate()([res, hb])
    bn = keras.layers.BatchNormalization(name="bn")(cat)
    return keras.Model(
        [a, b], [keras.layers.Dense(2, name="o1")(bn), keras.layers.Dense(1, name="o2")(cat)]
    )


@pytest.mark.backend_agnostic
def test_multi_input_multi_output_functional():
    model = _functional_branches()
    x = [_x(32, 8), _x(32, 6, seed=1)]
    result = probe.Probe(model, ALL_REDUCERS).run(x)
    names = [s.name for s in result.sites]
    assert names.index("ha") < names.index("skip") < names.index("bn")
    assert "dead_fraction" in result.metrics["ha"]
    assert "saturated_fraction" in result.metrics["hb"]
    assert "bn_mean_shift" in result.metrics["bn"]
    # Not judged -> absent, never a fake 0.
    assert "dead_fraction" not in result.metrics["hb"]
    assert "saturated_fraction" not in result.metrics["skip"]


@pytest.mark.backend_agnostic
def test_subclassed_model_and_shared_layer_first_call():
    model = Subclassed()
    x = _x(32, 8)
    model(x)
    result = probe.Probe(model, [probe.ActivationMoments()]).run(x)
    assert [s.name for s in result.sites] == [model.a.name, model.shared.name, model.out.name]
    first = keras.ops.convert_to_numpy(model.shared(model.a(x)))
    assert result.metrics[model.shared.name]["activation_std"] == pytest.approx(
        float(np.std(first)), rel=1e-4
    )


@pytest.mark.backend_agnostic
def test_nested_sequential_inside_functional():
    inner = keras.Sequential(
        [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(8, activation="sigmoid")]
    )
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(2)(inner(inp)))
    result = probe.Probe(model, [probe.Saturation(), probe.DeadUnits()]).run(_x())
    assert {s.layer.name for s in result.sites} >= {inner.layers[0].name, inner.layers[1].name}


# Statistics ---------------------------------------------------------------------------


@pytest.mark.backend_agnostic
def test_forced_dead_layer_is_exactly_dead_and_moments_match_numpy():
    inp = keras.Input((5,))
    dead = keras.layers.Dense(
        7,
        activation="relu",
        kernel_initializer="ones",
        bias_initializer=keras.initializers.Constant(-100.0),
    )
    alive = keras.layers.Dense(
        7, activation="relu", kernel_initializer=keras.initializers.Identity(), name="alive"
    )
    model = keras.Model(inp, alive(dead(inp)))
    x = np.abs(_x(40, 5)) + 0.1
    result = probe.Probe(model, [probe.DeadUnits(), probe.ActivationMoments()]).run(x)
    assert result.metrics[dead.name]["dead_fraction"] == 1.0
    assert result.metrics[dead.name]["firing_rate"] == 0.0
    assert "dead_fraction" in result.metrics["alive"]
    out = keras.ops.convert_to_numpy(dead(x))
    assert result.metrics[dead.name]["activation_std"] == pytest.approx(float(out.std()), abs=1e-6)


def test_channel_axes_follow_the_layer_whose_output_a_layer_receives():
    """A layer that states no layout (a standalone ReLU, PReLU, Dropout, Add,
    Concatenate) counts its units on the axis of what it receives; layers with weights or
    a `data_format` state their own, and a layer moving axes (Permute, Reshape) or a
    change of rank (Flatten) ends the inheritance."""
    layers = keras.layers
    inputs = keras.Input((3, 6, 6))
    conv = layers.Conv2D(4, 3, padding="same", data_format="channels_first")
    relu, drop = layers.ReLU(), layers.Dropout(0.1)
    norm, act = layers.BatchNormalization(axis=1), layers.Activation("relu")
    add, concat, prelu = layers.Add(), layers.Concatenate(axis=1), layers.PReLU(shared_axes=[2, 3])
    permute, after_permute = layers.Permute((2, 3, 1)), layers.ReLU()
    reshape, after_reshape = layers.Reshape((6, 8, 6)), layers.ReLU()
    flatten, dense, last = layers.Flatten(), layers.Dense(5), layers.ReLU()
    h = drop(relu(conv(inputs)))
    after_plus = layers.ReLU()
    after_plus(h + h)  # an operation, not a layer, in between
    h = prelu(concat([add([act(norm(h)), h]), h]))
    after_reshape(reshape(h))
    h = after_permute(permute(h))
    last(dense(flatten(h)))
    first = [conv, relu, drop, after_plus, norm, act, add, concat, prelu]
    other = [permute, after_permute, reshape, after_reshape, flatten, dense, last]
    axes = probe.selection.channel_axes(first + other)
    assert [axes[id(layer)] for layer in first] == [1] * len(first)
    assert [axes[id(layer)] for layer in other] == [-1] * len(other)
    # Through a nested model's output, in a Sequential model, and a shared layer's calls.
    block = keras.Sequential(
        [keras.Input((3, 6, 6)), layers.Conv2D(4, 1, data_format="channels_first")]
    )
    inner, shared = layers.ReLU(), layers.ReLU()
    shared(inner(block(inputs)))  # channels first
    shared(layers.Conv2D(4, 1)(keras.Input((6, 6, 3))))  # channels last: the calls disagree
    axes = probe.selection.channel_axes([inner, shared, block.layers[0]])
    assert [axes[id(inner)], axes[id(shared)], axes[id(block.layers[0])]] == [1, -1, 1]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("norm", [False, True])
def test_dead_units_after_a_channels_first_layer_are_counted_per_channel(norm):
    """A channels_first layer [-> BatchNormalization(axis=1)] -> ReLU with 4 of its 8
    channels dead for every input: the ReLU's dead fraction is 50%, not the 0% of
    counting "units" along the width. (ZeroPadding2D states the layout without a
    convolution: TensorFlow's CPU convolution takes NCHW only with oneDNN, off in CI.)"""
    layers = keras.layers
    inputs = keras.Input((8, 16, 16))
    h = layers.ZeroPadding2D(0, data_format="channels_first")(inputs)
    if norm:
        h = layers.BatchNormalization(axis=1, center=False, scale=False)(h)
    h = layers.ReLU(name="relu")(h)
    head = layers.Dense(5)(layers.GlobalAveragePooling2D(data_format="channels_first")(h))
    model = keras.Model(inputs, head)
    x = np.random.default_rng(0).normal(size=(16, 8, 16, 16)).astype("float32")
    # Channels 0-3 are never positive; after a batch norm, a constant channel is (it
    # normalizes to 0).
    x[:, :4] = -1.0 if norm else -np.abs(x[:, :4]) - 0.1
    result = probe.Probe(model, [probe.DeadUnits()]).run(x)
    assert result.metrics["relu"]["dead_fraction"] == 0.5


@pytest.mark.backend_agnostic
def test_saturation_counts_and_percentile():
    # An Activation layer applied to known values: sigmoid of +-10 saturates, of 0 does not.
    values = np.array([[-10.0, 0.0, 10.0, 10.0]] * 8, "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Activation("sigmoid")])
    m = probe.Probe(model, [probe.Saturation()]).run(values).metrics[model.layers[0].name]
    assert m["saturated_low"] == pytest.approx(0.25)
    assert m["saturated_high"] == pytest.approx(0.5)
    assert m["saturated_fraction"] == pytest.approx(0.75)
    assert m["abs_p98"] == pytest.approx(1.0, abs=2e-3)


@pytest.mark.backend_agnostic
def test_batches_pool_exactly_like_one_batch():
    inp = keras.Input((6,))
    bn = keras.layers.BatchNormalization()
    h = keras.layers.Dense(6, activation="relu")(inp)
    model = keras.Model(inp, bn(keras.layers.Dense(6)(h)))
    x = _x(100, 6) * 3 + 1
    one = probe.Probe(model, ALL_REDUCERS[:4]).run(x)
    many = probe.Probe(model, ALL_REDUCERS[:4], batch_size=30).run(x)  # 30, 30, 30, 10
    assert many.source == "100 samples in 4 batch(es)"
    for site, metrics in one.metrics.items():
        for key, value in metrics.items():
            np.testing.assert_allclose(many.metrics[site][key], value, rtol=1e-4, atol=1e-6)
    # BN input moments against NumPy on the layer's actual input.
    inner = keras.Model(inp, bn.input)
    actual = keras.ops.convert_to_numpy(inner(x))
    np.testing.assert_allclose(one.metrics[bn.name]["bn_input_variance"], actual.var(0), rtol=1e-4)


@pytest.mark.backend_agnostic
def test_bn_mismatch_definition():
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    model = keras.Sequential([keras.Input((3,)), bn])
    bn.moving_mean.assign([1.0, 0.0, 0.0])
    bn.moving_variance.assign([4.0, 1.0, 1.0])
    x = _x(2000, 3)
    m = probe.Probe(model, [probe.BatchNormStatistics()]).run(x).metrics[bn.name]
    mu, s2 = x.mean(0), x.var(0)
    d = (np.array([1.0, 0, 0]) - mu) / np.sqrt(s2 + 1e-3)
    r = np.sqrt((np.array([4.0, 1, 1]) + 1e-3) / (s2 + 1e-3))
    np.testing.assert_allclose(m["bn_d"], d, rtol=1e-4, atol=1e-5)
    assert m["bn_mean_shift"] == pytest.approx(np.abs(d).mean(), rel=1e-4)
    assert m["bn_std_ratio"] == pytest.approx(np.exp(np.abs(np.log(r)).max()), rel=1e-4)


def test_probe_changes_no_state_and_transfers_once(monkeypatch):
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.Dropout(0.5, seed=3)(h)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="sigmoid")(h))
    model.compile("adam", "mse")
    model.fit(_x(), np.zeros((64, 2)), epochs=1, verbose=0)
    before = _snapshot(model) + [np.array(v.numpy()) for v in model.optimizer.variables]
    transfers = []
    real = keras.ops.convert_to_numpy
    monkeypatch.setattr(
        engine_module.keras.ops, "convert_to_numpy", lambda t: transfers.append(1) or real(t)
    )
    probe.Probe(model, ALL_REDUCERS, batch_size=16).run(_x())
    assert len(transfers) == 1
    monkeypatch.undo()
    after = _snapshot(model) + [np.array(v.numpy()) for v in model.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.backend_agnostic
def test_compiled_and_eager_agree():
    model = _mlp("sigmoid")
    x = _x()
    runner = probe.Probe(model, ALL_REDUCERS)
    runner.plan(10)  # announced repeated use: compiled at the first call
    compiled = runner.run(x)
    assert (runner._vector.compiled is None) == (backend.current().EAGER_CALLS is None)
    eager = probe.Probe(model, ALL_REDUCERS, compile=False).run(x)
    for site, metrics in compiled.metrics.items():
        for key, value in metrics.items():
            np.testing.assert_allclose(eager.metrics[site][key], value, rtol=1e-5, atol=1e-6)


# When to compile (backend.Lazy) ----------------------------------------------------------


def _counting_lazy(monkeypatch, eager_calls):
    """A `Lazy` over a counter, with the backend's EAGER_CALLS set to `eager_calls`."""
    monkeypatch.setattr(backend.current(), "EAGER_CALLS", eager_calls)
    log = []

    def compile():
        log.append("compile")
        return lambda v: log.append(("compiled", v))

    return backend.Lazy(lambda v: log.append(("eager", v)), compile), log


def test_lazy_runs_eagerly_until_compiling_pays(monkeypatch):
    fn, log = _counting_lazy(monkeypatch, 2)
    for v in range(4):
        fn(v)
    assert log == [("eager", 0), ("eager", 1), "compile", ("compiled", 2), ("compiled", 3)]


def test_lazy_compiles_at_once_for_announced_calls(monkeypatch):
    fn, log = _counting_lazy(monkeypatch, 2)
    fn(0, upcoming=3)  # a run of three batches
    assert log == ["compile", ("compiled", 0)]
    fn, log = _counting_lazy(monkeypatch, 2)
    fn.planned = 3  # an owner's plan (a monitor's updates)
    fn(0)
    assert log == ["compile", ("compiled", 0)]
    fn, log = _counting_lazy(monkeypatch, 0)  # JAX: eager costs more than a trace
    fn(0)
    assert log == ["compile", ("compiled", 0)]


@pytest.mark.backend_agnostic
def test_plan_counts_from_the_calls_already_made(monkeypatch):
    # A monitor plans each fit's updates: a second short fit reaches the limit in all.
    monkeypatch.setattr(backend.current(), "EAGER_CALLS", 4)
    runner = probe.Probe(_mlp(), ALL_REDUCERS)
    runner.plan(3)
    for _ in range(3):
        runner.run(_x())
    assert runner._vector.compiled is None  # 3 calls: eager
    runner.plan(3)  # 6 in all > 4
    runner.run(_x())
    assert runner._vector.compiled is not None


def test_lazy_without_compiler_stays_eager(monkeypatch):
    monkeypatch.setattr(backend.current(), "EAGER_CALLS", 0)
    log = []
    fn = backend.Lazy(log.append)
    fn(1, upcoming=100)
    assert log == [1] and fn.compiled is None
    fn, log = _counting_lazy(monkeypatch, None)  # a backend without a compiler (torch)
    fn(0, upcoming=100)
    assert log == [("eager", 0)]


@pytest.mark.backend_agnostic
def test_one_off_probe_traces_only_where_eager_is_cheaper(monkeypatch):
    traced = []
    module = backend.current()
    original = module.compile_function
    monkeypatch.setattr(
        module, "compile_function", lambda fn, model: traced.append(1) or original(fn, model)
    )
    model = _mlp()
    runner = probe.Probe(model, ALL_REDUCERS)
    first = runner.run(_x())
    limit = module.EAGER_CALLS  # None: no compiler (torch)
    assert len(traced) == (0 if limit is None or limit >= 1 else 1)
    for _ in range((limit or 0) + 1):
        again = runner.run(_x())
    assert len(traced) == (0 if limit is None else 1)  # compiled once, then reused
    for site, metrics in first.metrics.items():
        for key, value in metrics.items():
            np.testing.assert_allclose(again.metrics[site][key], value, rtol=1e-5, atol=1e-6)


# Data ---------------------------------------------------------------------------------


class _PyData(keras.utils.PyDataset):
    def __init__(self, x):
        super().__init__()
        self.x = x

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return self.x[i * 10 : (i + 1) * 10], np.zeros((10, 1))


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("kind", ["tf.data", "PyDataset", "tf.Tensor", "tuple"])
def test_data_sources_agree(kind):
    if kind.startswith("tf."):
        tf = pytest.importorskip("tensorflow")  # tf.data / tf.Tensor sources need TensorFlow
    model = _mlp()
    x = _x(30)
    reducers = [probe.ActivationMoments()]
    ref = probe.Probe(model, reducers).run(x).metric("activation_std")
    data = {
        "tf.data": lambda: tf.data.Dataset.from_tensor_slices((x, np.zeros(30))).batch(10),
        "PyDataset": lambda: _PyData(x),
        "tf.Tensor": lambda: tf.constant(x),
        "tuple": lambda: (x, np.zeros(30)),
    }[kind]()
    got = probe.Probe(model, reducers).run(data).metric("activation_std")
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-4)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "data, match",
    [
        (np.full((4, 8), np.nan, "float32"), "must be finite"),
        (np.zeros((0, 8), "float32"), "at least one sample"),
        ([np.zeros((4, 8)), np.zeros((3, 8))], "same number of samples"),
        ((np.zeros((4, 8)), np.zeros((3, 1))), "same number of samples"),
        ("abc", "Received: data of type str"),
        (None, "Received: data=None"),
        ((np.zeros((4, 8)),) * 4, "tuple of length 4"),
        (np.float32(1.0), "Received"),
        (([[0.5, 1.0], [2.0, 3.0]], [0, 1]), r"Python list of numbers \(shape \(2, 2\)\)"),
        (np.zeros((32, 8)).tolist(), r"one array per model input\. Received: a Python list of"),
        # More targets than inputs: they were cut to the inputs' count without a word.
        ((np.zeros((4, 8)), np.zeros((6, 1))), "Received: 4 inputs and 6 targets"),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(ValueError, match=match):
        probe.as_batches(data)


def test_infinite_and_empty_datasets():
    tf = pytest.importorskip("tensorflow")  # tf.data needs TensorFlow
    inf = tf.data.Dataset.from_tensor_slices(_x(4)).batch(2).repeat()
    with pytest.raises(ValueError, match="infinite"):
        probe.as_batches(inf)
    assert len(probe.as_batches(inf, max_batches=3)[0]) == 3
    empty = tf.data.Dataset.from_tensor_slices(_x(4)).batch(2).take(0)
    with pytest.raises(ValueError, match="no batches"):
        probe.as_batches(empty)
    with pytest.raises(ValueError, match="max_batches=0"):
        probe.as_batches(_x(4), max_batches=0)
    unbatched = tf.data.Dataset.from_tensor_slices((_x(4), np.arange(4)))
    with pytest.raises(ValueError, match=r"a scalar \(an unbatched dataset\? .*\.batch\(32\)"):
        probe.as_batches(unbatched)


def test_bad_probe_arguments():
    with pytest.raises(ValueError, match="batch_size=0"):
        probe.Probe(_mlp(), [], batch_size=0)


BACKEND_INTERFACE = (
    "compile_function",
    "value_and_grad",
    "no_grad",
    "eager_pass",
    "run_after",
    "identity",
    "scope",
    "histogram",
    "discarding_updates",
    "preserving_rng",
    "squared_norms",
    "moments",
    "positive_rate",
    "plogp",
)


@pytest.mark.backend_agnostic
def test_backend_module_implements_the_interface_and_its_histogram_is_exact():
    module = probe.backend.current()
    assert module.__name__.rsplit(".", 1)[-1] == keras.backend.backend()
    for name in BACKEND_INTERFACE:
        assert callable(getattr(module, name)), name
    for name in ("EAGER_CALLS", "GRADIENT_EAGER_CALLS"):  # how many eager calls cost a trace
        assert getattr(module, name) is None or getattr(module, name) >= 0, name
    assert isinstance(module.REUSES_BATCH_MOMENTS, bool)
    values = np.array([-1.0, -0.95, -0.1, 0.0, 0.3, 0.999, 1.0, 2.0], "float32")
    counts = keras.ops.convert_to_numpy(module.histogram(keras.ops.array(values), -1.0, 1.0, 4))
    expected, _ = np.histogram(np.clip(values, -1, 1), bins=4, range=(-1, 1))
    np.testing.assert_array_equal(counts, expected)
    # Channels last (a matrix-vector product on TensorFlow) and channels first.
    a = np.random.default_rng(0).normal(size=(3, 5, 7, 4)).astype("float32")
    a[..., 1] = np.abs(a[..., 1])  # every value > 0
    a[..., 2] = 0.0  # none: zero is not positive
    for axis in (-1, 1):
        rate = keras.ops.convert_to_numpy(module.positive_rate(keras.ops.array(a), axis))
        others = tuple(i for i in range(4) if i != axis % 4)
        np.testing.assert_allclose(rate, (a > 0).mean(axis=others), rtol=1e-6)
    flat = a.reshape(-1, 4)  # a Dense layer's (batch, units)
    rate = keras.ops.convert_to_numpy(module.positive_rate(keras.ops.array(flat), -1))
    np.testing.assert_allclose(rate, (flat > 0).mean(axis=0), rtol=1e-6)
    if keras.backend.backend() == "tensorflow":  # traced with an unknown batch size
        import tensorflow as tf

        spec = tf.TensorSpec((None, 5, 7, 4), tf.float32)
        traced = tf.function(lambda t: module.positive_rate(t, -1), input_signature=[spec])
        np.testing.assert_allclose(traced(a).numpy(), (a > 0).mean(axis=(0, 1, 2)), rtol=1e-6)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "mean, std, rtol",
    [
        (0.0, 1.0, 1e-5),
        (10.0, 1.0, 1e-4),
        # Where a one-pass E[x²] − mean² would lose 6 digits or all (errors 6e-2 and 1):
        # as exact as float32 means allow.
        (1e3, 1.0, 1e-4),
        (0.5, 1e-5, 1e-3),
    ],
)
def test_backend_moments_are_exact_to_float32_rounding(mean, std, rtol):
    module = probe.backend.current()
    rng = np.random.default_rng(0)
    # 2^17 values: over every axis torch takes its `mean` + `var` form.
    a = (mean + std * rng.normal(size=(16, 8, 32, 32))).astype("float32")
    wide = a.astype("float64")
    for axes in [(0, 1, 2, 3), (0, 2, 3), (0, 1, 2)]:
        m, v = (keras.ops.convert_to_numpy(t) for t in module.moments(keras.ops.array(a), axes))
        np.testing.assert_allclose(m, wide.mean(axis=axes), rtol=1e-5, atol=1e-6 * std)
        np.testing.assert_allclose(v, wide.var(axis=axes), rtol=rtol)
    if keras.backend.backend() == "tensorflow":  # traced, an unknown batch size
        import tensorflow as tf

        spec = tf.TensorSpec((None, 8, 32, 32), tf.float32)
        traced = tf.function(lambda t: module.moments(t, (0, 1, 2, 3)), input_signature=[spec])
        np.testing.assert_allclose(traced(a)[1].numpy(), wide.var(), rtol=rtol)


@pytest.mark.backend_agnostic
def test_backend_moments_of_constant_and_non_finite_values():
    module = probe.backend.current()
    a = np.full((4, 128, 256), 3.0, "float32")
    m, v = (float(keras.ops.convert_to_numpy(t)) for t in module.moments(a, (0, 1, 2)))
    assert (m, v) == (3.0, 0.0)
    a[1, 2, 3] = np.inf
    m, v = (float(keras.ops.convert_to_numpy(t)) for t in module.moments(a, (0, 1, 2)))
    assert m == np.inf and np.isnan(v)  # as the two-pass form gives: inf - inf
    a[1, 2, 3] = np.nan
    m, v = (float(keras.ops.convert_to_numpy(t)) for t in module.moments(a, (0, 1, 2)))
    assert np.isnan(m) and np.isnan(v)


@pytest.mark.backend_agnostic
def test_backend_plogp_is_zero_at_zero_and_exact_elsewhere():
    p = np.array([0.0, 1e-12, 0.25, 0.5, 1.0], "float32")
    got = keras.ops.convert_to_numpy(probe.backend.current().plogp(keras.ops.array(p)))
    expected = np.where(p > 0, p * np.log(np.maximum(p, 1e-30)), 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
    assert got[0] == 0.0 and got[-1] == 0.0


@pytest.mark.backend_agnostic
def test_training_mode_measures_batch_norm_as_training_does_and_changes_nothing():
    # Conv with large weights -> BatchNormalization -> tanh. Through the moving statistics
    # (0, 1) of a fresh net the tanh saturates; training normalizes with the batch's.
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(
        16, 3, kernel_initializer=keras.initializers.RandomNormal(stddev=5.0, seed=1)
    )(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("tanh", name="act")(h)
    h = keras.layers.Dropout(0.5, seed=2)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = np.random.default_rng(0).standard_normal((32, 8, 8, 3)).astype("float32")
    before = _snapshot(model)
    seeds = [
        keras.ops.convert_to_numpy(layer.seed_generator.state)
        for layer in model.layers
        if hasattr(layer, "seed_generator")
    ]

    training = probe.Probe(model, [probe.Saturation()]).run(x).metrics["act"]
    inference = probe.Probe(model, [probe.Saturation()], mode="inference").run(x).metrics["act"]

    assert inference["saturated_fraction"] > 0.5
    assert training["saturated_fraction"] < 0.05
    for a, b in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(a, b)
    after = [
        keras.ops.convert_to_numpy(layer.seed_generator.state)
        for layer in model.layers
        if hasattr(layer, "seed_generator")
    ]
    for a, b in zip(seeds, after):
        np.testing.assert_array_equal(a, b)
    # Deterministic: dropout is off, so two passes agree exactly.
    again = probe.Probe(model, [probe.Saturation()]).run(x).metrics["act"]
    assert again["saturated_fraction"] == training["saturated_fraction"]


def test_mode_is_validated():
    with pytest.raises(ValueError, match="Received: mode='train'"):
        probe.Probe(_mlp("relu"), [probe.DeadUnits()], mode="train")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's optimizer")
def test_tensorflow_compiled_calls_skip_grappler_on_cpu_and_restore_the_thread_options(
    monkeypatch,
):
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    from keras_initkit.probe.backend import tensorflow as module

    def optimizer_off():
        options = context.context().function_call_options
        config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
        return config.graph_options.rewrite_options.disable_meta_optimizer

    in_force = []
    calling_with = module._calling_with

    def recording(options):
        with calling_with(options):
            in_force.append(optimizer_off())
            yield

    monkeypatch.setattr(module, "_calling_with", contextlib.contextmanager(recording))
    before = context.context().function_call_options
    call = module.compile_function(lambda x: x * 2.0, None)
    np.testing.assert_allclose(call(tf.constant([1.0, 2.0])), [2.0, 4.0])
    assert in_force == [True]  # our call ran without Grappler (no GPU here)
    assert context.context().function_call_options is before  # the user's keep theirs
    assert not optimizer_off()
    # With a GPU, Grappler's layout pass pays: the defaults stay.
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    assert module._call_options() is None


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("compiled", [False, True])
def test_batch_norm_statistics_reuse_the_layers_own_training_moments(monkeypatch, compiled):
    """TensorFlow and JAX: the moments the layer normalized with, not a second
    computation; torch (one-pass moments in Keras): the probe's own. Same values."""
    from keras_initkit.probe import reducers as reducers_module

    inp = keras.Input((5,))
    bn = keras.layers.BatchNormalization(momentum=0.5)
    model = keras.Model(inp, bn(keras.layers.Dense(5)(inp)))
    bn.moving_mean.assign(np.arange(5, dtype="float32"))
    bn.moving_variance.assign(np.full(5, 2.0, "float32"))
    feature = keras.Model(inp, bn.input)
    own = []
    monkeypatch.setattr(
        reducers_module, "moments", lambda x, axes: own.append(1) or engine_module.moments(x, axes)
    )
    x = _x(40, 5) * 2 + 3
    runner = probe.Probe(model, [probe.BatchNormStatistics()], batch_size=20)
    if compiled:
        runner.plan(100)
    metrics = runner.run(x).metrics[bn.name]
    if compiled and backend.current().EAGER_CALLS is not None:
        assert runner._vector.compiled is not None
    traced = runner._vector.compiled is not None  # JAX compiles at once
    reused = backend.current().REUSES_BATCH_MOMENTS
    assert len(own) == (0 if reused else (1 if traced else 2))  # two batches
    actual = keras.ops.convert_to_numpy(feature(x))
    np.testing.assert_allclose(metrics["bn_input_mean"], actual.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["bn_input_variance"], actual.var(0), rtol=1e-4)
    # The moving statistics before the pass (the layer's update is discarded too).
    d = (np.arange(5) - actual.mean(0)) / np.sqrt(actual.var(0) + bn.epsilon)
    np.testing.assert_allclose(metrics["bn_d"], d, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), np.arange(5))
    # In inference mode the layer computes no moments: the probe's own, on every backend.
    own.clear()
    inference = probe.Probe(model, [probe.BatchNormStatistics()], mode="inference").run(x)
    assert own == [1]
    np.testing.assert_allclose(
        inference.metrics[bn.name]["bn_input_variance"], actual.var(0), rtol=1e-4
    )


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("compiled", [False, True])
def test_no_batch_norm_layer_builds_its_update_in_a_training_pass(monkeypatch, compiled):
    """Watched or not, in a forward or a gradient pass: the update the pass would drop
    is not built (`training_semantics`); outside a probe Keras' own call runs."""
    from keras_initkit.probe.gradients import GradientProbe

    original = keras.layers.BatchNormalization.call
    own_calls = []

    def counting(self, inputs, training=None, mask=None):  # Keras reads the signature
        own_calls.append(self.name)
        return original(self, inputs, training=training, mask=mask)

    monkeypatch.setattr(keras.layers.BatchNormalization, "call", counting)
    inp = keras.Input((5,))
    dense = keras.layers.Dense(5)
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.BatchNormalization()(dense(inp))))
    model.compile("sgd", "mse")
    x, y = _x(20, 5), _x(20, 1, seed=1)
    watched = probe.Probe(model, [probe.BatchNormStatistics(), probe.ActivationMoments()])
    unwatched = probe.Probe(model, [probe.ActivationMoments()], layers=[dense])
    gradients = GradientProbe(model)
    for runner in (watched, unwatched, gradients):
        if compiled:
            runner.plan(100)
    watched.run(x)
    unwatched.run(x)
    gradients.run((x, y))
    assert own_calls == []
    model(x, training=True)
    assert len(own_calls) == 1


class _Pairs(probe.Reducer):
    """Stats of every packing kind: scalars, a pair of scalars, a pair of vectors, a
    matrix."""

    name = "pairs"
    merge = {"scalar": "mean", "pair": "moments", "columns": "moments", "matrix": "last"}

    def reduce(self, site, inputs, pre, outputs):
        x = keras.ops.cast(outputs, "float32")
        return {
            "scalar": keras.ops.max(x),
            "pair": probe.moments(x, (0, 1)),
            "columns": probe.moments(x, (0,)),
            "matrix": keras.ops.stack([keras.ops.min(x, axis=0), keras.ops.max(x, axis=0)]),
        }

    def finalize(self, site, stats):
        return dict(stats)


@pytest.mark.backend_agnostic
def test_pack_places_scalars_pairs_and_matrices_and_unpacks_them_exactly():
    model = _mlp(depth=2, width=3, d=4)
    x = _x(10, 4)
    runner = probe.Probe(model, [_Pairs()], layers=[layer.name for layer in model.layers[1:]])
    metrics = runner.run(x).metrics
    for layer in model.layers[1:]:
        out = keras.ops.convert_to_numpy(keras.Model(model.input, layer.output)(x))
        got = metrics[layer.name]
        assert got["pair"].shape == (2,) and got["columns"].shape == (2, out.shape[1])
        np.testing.assert_allclose(got["scalar"], out.max(), rtol=1e-6)
        np.testing.assert_allclose(got["pair"], [out.mean(), out.var()], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["columns"], [out.mean(0), out.var(0)], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["matrix"], [out.min(0), out.max(0)], rtol=1e-6)


class _Ragged(probe.Reducer):
    name = "ragged"
    merge = {"pair": "last"}

    def reduce(self, site, inputs, pre, outputs):
        x = keras.ops.cast(outputs, "float32")
        return {"pair": (keras.ops.max(x), keras.ops.max(x, axis=0))}

    def finalize(self, site, stats):
        return {}


@pytest.mark.backend_agnostic
def test_a_tuple_stat_of_different_shapes_is_a_clear_error():
    model = _mlp(depth=1, width=3, d=4)
    with pytest.raises(ValueError, match=r"tuple of tensors of one static shape.*\(\), \(3,\)"):
        probe.Probe(model, [_Ragged()], layers=[model.layers[1].name]).run(_x(6, 4))


@pytest.mark.backend_agnostic
def test_lag_waits_for_the_oldest_reductions_once_their_activations_exceed_its_budget():
    def activation(values):
        return keras.ops.zeros((values,), "float32")  # 4 bytes a value

    lag = engine_module.Lag(fraction=0.5)
    lag.hold(["a"], [activation(1000)])  # 4000 bytes held > half of the largest (4000)
    assert lag.due() == ["a"]
    lag.hold(["b"], [activation(100)])
    lag.hold(["c"], [activation(100), activation(100)])  # input and output: 800 bytes
    assert lag.due() == []  # 1200 bytes held <= 2000: b and c run beside the forward pass
    lag.hold(["d"], [activation(2000)])  # largest now 8000: 9200 held > 4000
    assert lag.due() == ["b", "c", "d"]  # oldest first, until <= 4000
    assert lag.due() == []

    strict = engine_module.Lag(fraction=0.0)
    for name in "xy":
        strict.hold([name], [activation(10)])
        assert strict.due() == [name]
    assert engine_module.Lag().fraction == engine_module.LAG_FRACTION


class _Gate(keras.layers.Layer):
    """Runs one of two sublayers, chosen by `ops.cond` on the input's mean."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.high = keras.layers.Dense(8, activation="relu", name="high")
        self.low = keras.layers.Dense(8, activation="tanh", name="low")

    def build(self, input_shape):
        self.high.build(input_shape)
        self.low.build(input_shape)

    def call(self, x):
        return keras.ops.cond(keras.ops.mean(x) > 0, lambda: self.high(x), lambda: self.low(x))


@pytest.mark.backend_agnostic
def test_a_layer_inside_a_control_flow_branch_is_left_unmeasured_in_a_traced_pass(tmp_path):
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, activation="relu", name="stem")(inputs)
    h = keras.layers.Dense(8, activation="relu", name="head")(_Gate(name="gate")(h))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(h))
    model.compile(optimizer="sgd", loss="mse")
    x, y = _x(16), np.zeros((16, 1), "float32")
    traced = probe.backend.current().EAGER_CALLS == 0  # TensorFlow and JAX
    for _ in range(2):  # the traced pass, then its reuse
        metrics = keras_initkit.diagnose(model, x).metrics
        assert {"stem", "head", "out"} <= set(metrics)
        branches = {"gate/high", "gate/low", "high", "low"} & set(metrics)
        assert not branches if traced else len(branches) == 1  # eagerly: the branch taken
    monitor = keras_initkit.callbacks.TrainingMonitor(x, update_freq=1, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert {"stem", "head", "out"} <= set(monitor.latest)
    # lsuv_init runs eagerly; JAX traces both branches of `ops.cond` even then.
    report = keras_initkit.lsuv_init(model, x, verbose=0)
    assert all(report[name].converged for name in ("stem", "head"))
    gated = [r for r in report.layers if r.name.rsplit("/", 1)[-1] in ("high", "low")]
    skipped = sorted(r.skipped or "calibrated" for r in gated)
    if keras.backend.backend() == "jax":
        assert skipped == [keras_initkit.lsuv.BRANCH] * 2
    else:
        assert skipped == ["calibrated", "not called in the forward pass"]

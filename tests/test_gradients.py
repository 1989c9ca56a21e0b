"""Per-layer gradient norms: exact values, pooling over batches, and no state change."""

import keras
import numpy as np
import pytest

import keras_initkit as ik
from keras_initkit import probe
from keras_initkit.probe import stochastic_layers
from keras_initkit.probe.gradients import GradientProbe, layer_gradients

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="compares against tf.GradientTape"
)


def _data(n=48, d_in=5, d_out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_in)).astype("float32")
    y = rng.normal(size=(n, d_out)).astype("float32")
    return x, y


def _numpy(variable):
    return np.array(keras.ops.convert_to_numpy(variable))


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("batch_size", [None, 20])
def test_linear_dense_matches_closed_form_gradient(batch_size):
    x, y = _data()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="linear")])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    kernel, bias = (_numpy(v) for v in model.layers[0].weights)
    # mse = mean over samples and units of (xW + b - y)^2
    residual = x @ kernel + bias - y
    scale = 2.0 / residual.size
    g_kernel, g_bias = scale * x.T @ residual, scale * residual.sum(axis=0)
    expected = np.sqrt(np.sum(g_kernel**2) + np.sum(g_bias**2))

    result = layer_gradients(model, (x, y), batch_size=batch_size)

    values = result.metrics["linear"]
    np.testing.assert_allclose(values["gradient_norm"], expected, rtol=1e-5)
    w_norm = np.sqrt(np.sum(kernel**2) + np.sum(bias**2))
    np.testing.assert_allclose(values["weight_norm"], w_norm, rtol=1e-6)
    np.testing.assert_allclose(values["update_ratio"], 0.05 * expected / w_norm, rtol=1e-5)
    np.testing.assert_allclose(result.loss, np.mean(residual**2), rtol=1e-5)
    np.testing.assert_allclose(result.learning_rate, 0.05, rtol=1e-6)


def _small_net(dropout=0.0, regularizer=None):
    inputs = keras.Input((5,))
    h = keras.layers.Dense(8, activation="tanh", name="hidden", kernel_regularizer=regularizer)(
        inputs
    )
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dropout(dropout, seed=3)(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inputs, outputs)


@TF_ONLY
def test_matches_hand_computed_gradient_tape():
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    x, y = _data()
    model = _small_net(regularizer=keras.regularizers.L2(0.01))
    model.compile(optimizer="adam", loss="mse")

    result = layer_gradients(model, (x, y), batch_size=16, mode="inference")

    with tf.GradientTape() as tape:
        pred = model(x, training=False)
        loss = tf.reduce_mean(tf.square(pred - y)) + tf.add_n(model.losses)
    grads = dict(
        zip(
            [id(v) for v in model.trainable_variables],
            tape.gradient(loss, model.trainable_variables),
        )
    )
    for name in ("hidden", "bn", "out"):
        layer = model.get_layer(name)
        expected = np.sqrt(
            sum(float(tf.reduce_sum(grads[id(w)] ** 2)) for w in layer.trainable_weights)
        )
        np.testing.assert_allclose(result.metrics[name]["gradient_norm"], expected, rtol=1e-4)
    np.testing.assert_allclose(result.loss, float(loss), rtol=1e-5)
    assert [s.name for s in result.sites] == ["hidden", "bn", "out"]


NAMES = ("hidden", "bn", "out")


@TF_ONLY
def test_training_mode_is_a_training_step_with_dropout_off_and_no_state_change():
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    x, y = _data()
    model = _small_net(dropout=0.5)
    model.compile(optimizer="adam", loss="mse")
    state = [_numpy(v) for v in model.non_trainable_variables]

    result = layer_gradients(model, (x, y))  # mode="training", the default

    reference = _small_net(dropout=0.0)  # the same net without dropout, in training mode
    reference.set_weights(model.get_weights())
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(reference(x, training=True) - y))
    grads = tape.gradient(loss, {n: reference.get_layer(n).trainable_weights for n in NAMES})
    for name in NAMES:
        expected = np.sqrt(sum(float(tf.reduce_sum(g**2)) for g in grads[name]))
        np.testing.assert_allclose(result.metrics[name]["gradient_norm"], expected, rtol=1e-4)
    np.testing.assert_allclose(result.loss, float(loss), rtol=1e-5)
    for old, v in zip(state, model.non_trainable_variables):  # moving statistics untouched
        np.testing.assert_array_equal(_numpy(v), old)


class _DropPath(keras.layers.Layer):
    """Stochastic depth as keras.applications' ConvNeXt and keras_hub write it: no
    SeedGenerator, a draw from Keras' global generator in training."""

    def __init__(self, drop_path_rate, **kwargs):
        super().__init__(**kwargs)
        self.drop_path_rate = drop_path_rate

    def call(self, x, training=None):
        if not training:
            return x
        keep = 1 - self.drop_path_rate
        mask = keras.ops.floor(keep + keras.random.uniform((keras.ops.shape(x)[0], 1)))
        return x / keep * mask


class _NormBlock(keras.layers.Layer):
    """A block with a `dropout` setting and a batch norm inside: not stochastic itself."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dropout = 0.5
        self.norm = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.norm(x, training=training)


@pytest.mark.backend_agnostic
def test_stochastic_depth_from_the_global_generator_is_off_in_a_training_pass():
    """ConvNeXt's StochasticDepth owns no SeedGenerator, so the probe ran it in training
    mode: `diagnose(model, x, y)` gave a random draw of dropped paths (torch: loss 2.79
    against evaluate's 3.04 at drop_path_rate=0.9), and on JAX it raised Keras' "[JAX
    RNG] When tracing a JAX function, you should only use seeded random ops"."""
    x, y = _data()
    inputs = keras.Input((x.shape[1],))
    h = keras.layers.Dense(8, activation="tanh", name="hidden")(inputs)
    h = _NormBlock(name="block")(h)
    h = keras.layers.Add()([h, _DropPath(0.9, name="drop_path")(h)])
    model = keras.Model(inputs, keras.layers.Dense(y.shape[1], name="out")(h))
    model.compile(optimizer="sgd", loss="mse")
    names = [layer.name for layer in stochastic_layers(model)]
    assert "drop_path" in names and "block" not in names, names
    losses = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        losses.append(ik.diagnose(model, x, y).loss)
    reference = _small_reference_loss(model, x, y)
    np.testing.assert_allclose(losses, [reference, reference], rtol=1e-5)


def _small_reference_loss(model, x, y):
    """The training-mode loss with the drop path as the identity (batch norm on the
    batch's statistics, as in a training step)."""
    with keras.StatelessScope():
        h = model.get_layer("block")(model.get_layer("hidden")(x), training=True)
        out = model.get_layer("out")(h + h)
    return float(np.mean((keras.ops.convert_to_numpy(out) - y) ** 2))


@TF_ONLY
def test_explicit_loss_on_uncompiled_model_has_no_update_ratio():
    import tensorflow as tf

    x, y = _data()
    model = _small_net()
    result = layer_gradients(model, (x, y), loss=keras.losses.MeanAbsoluteError(), mode="inference")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(model(x, training=False) - y))
    g = tape.gradient(loss, model.get_layer("out").trainable_weights)
    expected = np.sqrt(sum(float(tf.reduce_sum(t**2)) for t in g))
    np.testing.assert_allclose(result.metrics["out"]["gradient_norm"], expected, rtol=1e-5)
    assert "update_ratio" not in result.metrics["out"]
    assert result.learning_rate is None


@pytest.mark.backend_agnostic
@pytest.mark.parametrize(
    "optimizer, along",
    [
        (lambda: keras.optimizers.SGD(1e4, momentum=0.9), True),
        (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1e4)), True),
        (lambda: keras.optimizers.Adam(1e4), False),
        (lambda: keras.optimizers.RMSprop(1e4), False),
        (lambda: keras.optimizers.Lion(1e4), False),
    ],
    ids=["sgd", "loss_scaled_sgd", "adam", "rmsprop", "lion"],
)
def test_update_ratio_and_exploding_only_where_the_step_scales_with_the_gradient(optimizer, along):
    """An SGD step is lr × g; an adaptive optimizer's is about lr per coordinate whatever
    ‖g‖ is: `update_ratio` (lr × ‖g‖ / ‖w‖) is its size under SGD only, and only there
    does a large one mean exploding. A learning rate of 1e4 makes every ratio > 1."""
    x, y = _data()
    model = _small_net()
    model.compile(optimizer=optimizer(), loss="mse")
    result = layer_gradients(model, (x, y))
    values = result.metrics["out"]
    np.testing.assert_allclose(result.learning_rate, 1e4, rtol=1e-6)  # reported either way
    if along:
        expected = 1e4 * values["gradient_norm"] / values["weight_norm"]
        np.testing.assert_allclose(values["update_ratio"], expected, rtol=1e-6)
    else:
        assert not any("update_ratio" in v for v in result.metrics.values())
    report = ik.diagnose(model, x, y)
    assert ("exploding" in {f.rule for f in report.findings}) is along


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("gain, exploding", [(3.0, True), (1.0, False)])
def test_exploding_through_depth_is_found_under_adam(gain, exploding):
    """A tanh RNN at recurrent gain 3 is chaotic: its gradient grows step after step back
    through time, far above the output layer's. Under Adam no `update_ratio` exists to
    judge, and the mirrored first-to-last rule (`exploding_ratio`) finds it; at gain 1
    nothing is found."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 40, 2)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((40, 2)),
            keras.layers.SimpleRNN(
                16, recurrent_initializer=keras.initializers.Orthogonal(gain), name="rnn"
            ),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    report = ik.diagnose(model, x, y)
    rules = {(f.layer, f.rule) for f in report.findings}
    assert (("rnn", "exploding_ratio") in rules) is exploding
    assert not any(rule == "exploding" for _, rule in rules)  # no step size under Adam
    ratio = layer_gradients(model, (x, y)).metrics
    ratio = ratio["rnn"]["gradient_norm"] / ratio["out"]["gradient_norm"]
    assert (ratio > 1e3) is exploding, ratio
    # Its threshold, by name as every rule's: raised past the ratio, nothing is found.
    raised = ik.diagnose(model, x, y, thresholds={"exploding_gradient_ratio": 10 * ratio})
    assert "exploding_ratio" not in {f.rule for f in raised.findings}
    with pytest.raises(ValueError, match="exploding_gradient_ratio"):
        ik.diagnose(model, x, y, thresholds={"exploding_gradient_ratio": -1.0})


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(2)
    x, y = _data()
    model = _small_net(dropout=0.5)
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # builds optimizer and metric state
    return model, x, y


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_no_variable_changes_model_optimizer_or_seed_state(trained, mode):
    model, x, y = trained
    tracked = model.variables + model.optimizer.variables + model.metrics_variables
    seeds = [
        layer.seed_generator.state for layer in model.layers if hasattr(layer, "seed_generator")
    ]
    assert seeds
    before = [_numpy(v).copy() for v in tracked + seeds]

    result = layer_gradients(model, (x, y), mode=mode)

    assert all(np.isfinite(m["gradient_norm"]) for m in result.metrics.values())
    for old, v in zip(before, tracked + seeds):
        np.testing.assert_array_equal(_numpy(v), old)


@pytest.mark.backend_agnostic
def test_training_mode_differs_only_through_batch_statistics():
    x, y = _data()
    model = _small_net()
    model.compile(optimizer="sgd", loss="mse")
    inference = layer_gradients(model, (x, y), mode="inference").metric("gradient_norm")
    training = layer_gradients(model, (x, y), mode="training").metric("gradient_norm")
    # At init the moving statistics (0, 1) are not the batch's: the gradients differ.
    assert not np.isclose(inference["hidden"], training["hidden"], rtol=1e-3)


@pytest.mark.backend_agnostic
def test_nested_model_reports_leaf_layers_once():
    x, y = _data()
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="inner_dense")], name="block"
    )
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    probe = GradientProbe(model, loss="mse")
    result = probe.run((x, y))
    assert set(result.metrics) == {"inner_dense", "head"}
    again = probe.run((x, y))  # the compiled step is reused
    assert again.metrics == result.metrics


class _Unused(keras.layers.Layer):
    """Passes its input on; its weight is never read (keras_hub's untied LM-head
    embedding is such a weight)."""

    def build(self, shape):
        self.spare = self.add_weight(shape=(3,), initializer="ones", name="spare")

    def call(self, x):
        return x


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("compiled", [False, True])
def test_a_weight_the_loss_never_reads_has_a_zero_gradient(monkeypatch, compiled):
    # TensorFlow raised "'str' object has no attribute '_type_enum'": the zeros of an
    # unconnected source took a Keras Variable's dtype, a string.
    from keras_initkit.probe import backend

    if compiled and backend.current().GRADIENT_EAGER_CALLS is None:
        pytest.skip("this backend has no compiled gradient step")
    monkeypatch.setattr(backend.current(), "GRADIENT_EAGER_CALLS", 0 if compiled else 100)
    x, y = _data()
    inputs = keras.Input((5,))
    h = _Unused(name="unused")(keras.layers.Dense(4, name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    model.compile(optimizer="sgd", loss="mse")
    result = layer_gradients(model, (x, y))
    assert result.metrics["unused"]["gradient_norm"] == 0.0
    assert result.metrics["hidden"]["gradient_norm"] > 0.0
    report = ik.diagnose(model, x, y)
    assert report.loss == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-5)


@pytest.mark.backend_agnostic
def test_frozen_layers_and_layer_selection():
    x, y = _data()
    model = _small_net()
    model.get_layer("hidden").trainable = False
    result = layer_gradients(model, (x, y), loss="mse")
    assert "hidden" not in result.metrics
    only = layer_gradients(model, (x, y), loss="mse", layers=["out"])
    assert set(only.metrics) == {"out"}
    model.trainable = False
    frozen = layer_gradients(model, (x, y), loss="mse")
    assert frozen.metrics == {} and np.isfinite(frozen.loss)


@pytest.mark.backend_agnostic
def test_bad_input_raises_value_error():
    x, y = _data()
    model = _small_net()
    with pytest.raises(ValueError, match="Received"):
        GradientProbe(model)  # uncompiled, no loss
    with pytest.raises(ValueError, match="Received"):
        layer_gradients(model, x, loss="mse")  # no targets
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="Received"):
        layer_gradients(model, (bad, y), loss="mse")
    with pytest.raises(ValueError, match="Received"):
        layer_gradients(model, (x[:0], y[:0]), loss="mse")
    with pytest.raises(ValueError, match="Received"):
        layer_gradients(model, (x, y), loss=3)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Received"):
        layer_gradients(unbuilt, (x, y), loss="mse")


def test_unsupported_backend_fails_at_construction(monkeypatch):
    model = _small_net()
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(NotImplementedError, match="numpy"):
        GradientProbe(model, loss="mse")


# One pass: forward statistics from the gradient pass ------------------------------------


def _every_kind_model():
    """Bounded, rectifier, batch norm, dropout, LSTM and attention sites."""
    inputs = keras.Input((6, 4))
    h = keras.layers.Dense(8, activation="tanh")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.5, seed=1)(h)
    h = keras.layers.LSTM(8, return_sequences=True)(h)
    h = keras.layers.MultiHeadAttention(2, 4)(h, h)
    h = keras.layers.Dense(8, activation="relu")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile("sgd", "mse")
    return model


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("batch_size", [None, 10])
def test_fused_pass_gives_the_forward_probe_and_gradient_results(batch_size):
    from keras_initkit import checks
    from keras_initkit.checks.book import default_checks
    from keras_initkit.probe import Probe

    keras.utils.set_random_seed(0)
    model = _every_kind_model()
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(24, 6, 4)).astype("float32"), rng.normal(size=(24, 1)))
    reducers = checks.reducers(default_checks())
    before = [np.array(v) for v in model.variables]
    alone = Probe(model, reducers, batch_size=batch_size).run(data)
    forward = Probe(model, reducers, batch_size=batch_size)
    fused = GradientProbe(model, batch_size=batch_size, forward=forward).run(data)
    plain = GradientProbe(model, batch_size=batch_size).run(data)
    assert plain.forward is None
    assert set(fused.forward.metrics) == set(alone.metrics)
    kinds = {s.kind for s in fused.forward.sites}
    assert {"bounded", "dead", "recurrent", "attention"} <= kinds
    for site, metrics in alone.metrics.items():
        assert set(fused.forward.metrics[site]) == set(metrics)
        for key, value in metrics.items():
            np.testing.assert_allclose(
                fused.forward.metrics[site][key], value, rtol=1e-4, atol=1e-6, err_msg=key
            )
    np.testing.assert_allclose(fused.loss, plain.loss, rtol=1e-6)
    for site, metrics in plain.metrics.items():
        for key, value in metrics.items():
            np.testing.assert_allclose(fused.metrics[site][key], value, rtol=1e-4, err_msg=key)
    for a, b in zip(before, model.variables):
        np.testing.assert_array_equal(a, np.array(b))  # nothing changed


def test_fused_pass_rejects_a_probe_of_another_model_or_mode():
    from keras_initkit.probe import Probe, Saturation

    model, other = _every_kind_model(), _every_kind_model()
    with pytest.raises(ValueError, match="same model and mode.*Received"):
        GradientProbe(model, forward=Probe(other, [Saturation()]))
    with pytest.raises(ValueError, match="must be None or a .*Received: forward of type str"):
        GradientProbe(model, forward="moments")
    with pytest.raises(ValueError, match="same model and mode.*'inference'"):
        GradientProbe(model, forward=Probe(model, [Saturation()], mode="inference"))


def _two_headed(name="inner"):
    """A functional model with outputs `a` (through `used_*`) and `b` (through `spare_*`)."""
    inputs = keras.Input((5,))
    a = keras.layers.Dense(4, activation="relu", name=f"used_{name}")(inputs)
    b = keras.layers.Dense(4, activation="relu", name=f"spare_{name}")(inputs)
    return keras.Model(inputs, {"b": b, "a": a}, name=name)


@pytest.mark.backend_agnostic
def test_a_layer_the_loss_does_not_depend_on_is_not_judged_vanishing():
    # BERT under a token-level head: its pooled_dense reaches no output, its gradient is 0
    x, y = _data()
    inner = _two_headed()
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inner(inputs)["a"]))
    model.compile(optimizer="sgd", loss="mse")
    sites = {s.layer.name: s for s in probe.make_sites(model, probe.all_layers(model))}
    assert [n for n, s in sites.items() if s.unused] == ["spare_inner"]
    report = ik.diagnose(model, x, y)
    assert report.metrics["spare_inner"]["gradient_norm"] == 0.0
    assert "gradient_ratio" not in report.metrics["spare_inner"]
    assert report.metrics["used_inner"]["gradient_ratio"] > 0
    assert not [f for f in report.findings if f.layer == "spare_inner"], str(report)
    assert any("spare_inner" in note and "not judged" in note for note in report.notes)


@pytest.mark.backend_agnostic
def test_unused_layers_follows_the_outputs_used_into_nested_models():
    inner = _two_headed()
    inputs = keras.Input((5,))
    both = inner(inputs)
    model = keras.Model(inputs, keras.layers.Add()([both["a"], both["b"]]))
    assert probe.selection.unused_layers(model) == set()
    # one nested model inside another: only `b` of the innermost is used
    deepest = _two_headed("deepest")
    middle_in = keras.Input((5,))
    middle = keras.Model(
        middle_in, [deepest(middle_in)["b"], keras.layers.Dense(2, name="m")(middle_in)]
    )
    outer_in = keras.Input((5,))
    outer = keras.Model(outer_in, middle(outer_in)[0])
    unused = probe.selection.unused_layers(outer)
    names = {layer.name for layer in probe.all_layers(outer) if id(layer) in unused}
    assert names == {"used_deepest", "m"}

    class Subclassed(keras.Model):  # no graph to read: every layer counts as used
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    assert probe.selection.unused_layers(Subclassed()) == set()


@pytest.mark.backend_agnostic
def test_each_output_head_is_the_reference_of_the_layers_that_feed_it():
    """A trunk with a classifier and a regressor on unscaled targets (1000-3000): every
    gradient ratio was taken against the last kernel layer in forward order, so the
    regressor head, fed directly by its own loss, "exploded" 1e4 × through no depth. A
    head is its own reference; the trunk's is the head it feeds with the largest ‖g‖."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = {"cls": np.arange(64) % 3, "price": rng.uniform(1000, 3000, (64, 1)).astype("float32")}
    inputs = keras.Input((16,))
    trunk = keras.layers.Dense(32, activation="relu", name="trunk")(inputs)
    heads = {"cls": keras.layers.Dense(3, name="cls")(trunk)}
    heads["price"] = keras.layers.Dense(1, name="price")(trunk)
    model = keras.Model(inputs, heads)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss={"cls": cross_entropy, "price": "mse"})
    sites = {s.layer.name: s for s in probe.make_sites(model, probe.all_layers(model))}
    assert {h.name for h in sites["trunk"].heads} == {"cls", "price"}
    assert [h.name for h in sites["price"].heads] == ["price"]
    report = ik.diagnose(model, x, y)
    metrics = report.metrics
    assert metrics["price"]["gradient_norm"] > 1e3 * metrics["cls"]["gradient_norm"]
    assert metrics["price"]["gradient_ratio"] == metrics["cls"]["gradient_ratio"] == 1.0
    expected = metrics["trunk"]["gradient_norm"] / metrics["price"]["gradient_norm"]
    assert metrics["trunk"]["gradient_ratio"] == pytest.approx(expected)
    assert report.ok, str(report)


@pytest.mark.backend_agnostic
def test_an_output_without_a_loss_is_no_reference():
    """`loss={"cls": ..., "aux": None}`: the aux head (gradient 0) was the last kernel
    layer, every ratio was undefined, and a vanishing trunk went unreported."""
    keras.utils.set_random_seed(0)
    small = keras.initializers.RandomNormal(stddev=0.05, seed=1)
    inputs = keras.Input((8,))
    h = inputs
    for i in range(10):
        h = keras.layers.Dense(16, activation="sigmoid", kernel_initializer=small, name=f"d{i}")(h)
    cls = keras.layers.Dense(3, name="cls")(h)
    aux = keras.layers.Dense(2, name="aux")(h)
    model = keras.Model(inputs, {"cls": cls, "aux": aux})
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("sgd", loss={"cls": cross_entropy, "aux": None})
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    y = {"cls": np.arange(32) % 3, "aux": np.zeros((32, 2), "float32")}
    report = ik.diagnose(model, x, y)
    assert report.metrics["aux"]["gradient_norm"] == 0.0
    assert "gradient_ratio" not in report.metrics["aux"]
    ratio = report.metrics["d0"]["gradient_ratio"]
    assert ratio == pytest.approx(
        report.metrics["d0"]["gradient_norm"] / report.metrics["cls"]["gradient_norm"]
    )
    assert ("d0", "vanishing") in {(f.layer, f.rule) for f in report.findings}, str(report)


@pytest.mark.backend_agnostic
def test_output_heads_of_sequential_nested_and_custom_models():
    layers = keras.layers
    sequential = keras.Sequential(
        [keras.Input((4,)), layers.Dense(3), layers.ReLU(), layers.Dense(2)]
    )
    heads = probe.selection.output_heads(sequential)
    last = sequential.layers[-1]
    assert all(heads[id(layer)] == {last} for layer in sequential.layers)
    base = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="inner")])
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="top")(base(inputs)))
    heads = probe.selection.output_heads(model)
    assert {h.name for h in heads[id(base.layers[0])]} == {"top"}  # inside a nested model
    # A head built as its own Sequential: its last kernel layer, and what feeds the call.
    trunk = layers.Dense(4, name="trunk")
    heads = {"a": base, "b": keras.Sequential([keras.Input((4,)), layers.Dense(1, name="b_out")])}
    h = trunk(inputs)
    nested = keras.Model(inputs, {name: head(h) for name, head in heads.items()})
    found = probe.selection.output_heads(nested)
    assert {h.name for h in found[id(trunk)]} == {"inner", "b_out"}
    assert {h.name for h in found[id(base.layers[0])]} == {"inner"}
    norm_out = keras.Model(inputs, layers.LayerNormalization()(layers.Dense(2)(inputs)))
    assert probe.selection.output_heads(norm_out) is None  # which of its layers is last?


@pytest.mark.backend_agnostic
def test_heads_built_as_nested_models_are_each_their_own_reference():
    """Heads as `Sequential` sub-models fell back to one reference for every layer: the
    regressor's layers read "exploding 5.9e4 × that of c_out"."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = {"cls": np.arange(64) % 3, "reg": rng.uniform(1000, 3000, (64, 1)).astype("float32")}
    layers = keras.layers
    trunk = keras.Sequential([keras.Input((16,)), layers.Dense(16, activation="relu", name="t1")])
    reg = keras.Sequential([keras.Input((16,)), layers.Dense(8, activation="relu", name="r1")])
    reg.add(layers.Dense(1, name="r_out"))
    cls = keras.Sequential([keras.Input((16,)), layers.Dense(3, name="c_out")])
    inputs = keras.Input((16,))
    h = trunk(inputs)
    model = keras.Model(inputs, {"reg": reg(h), "cls": cls(h)})
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss={"cls": cross_entropy, "reg": "mse"})
    report = ik.diagnose(model, x, y)
    assert report.metrics["r_out"]["gradient_ratio"] == 1.0
    assert report.metrics["c_out"]["gradient_ratio"] == 1.0
    assert not [f for f in report.findings if f.kind == "exploding_gradients"], str(report)


@pytest.mark.backend_agnostic
def test_a_loss_failing_on_diverged_outputs_is_not_blamed_on_the_targets():
    """torch's binary cross-entropy raises on NaN predictions ("all elements of input
    should be between 0 and 1"): the error said the targets do not fit the loss (a
    one-hot `y` for a sparse loss?) where the network had diverged."""

    def strict_loss(y_true, y_pred):
        raise ValueError("all elements of input should be between 0 and 1")

    inputs = keras.Input((4,))
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(inputs))
    model.compile("sgd", loss=strict_loss)
    x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    with pytest.raises(ValueError, match=r"^The targets, of shape"):
        ik.diagnose(model, x, y)
    dense.kernel.assign(np.full((4, 1), np.nan, "float32"))
    with pytest.raises(ValueError, match=r"^The model's outputs are not finite \(NaN or inf"):
        ik.diagnose(model, x, y)

"""diagnose: one model per finding, a healthy model with none, the report's forms, bad input."""

import json

import keras
import numpy as np
import pytest

import keras_initkit
from keras_initkit import HealthReport, diagnose
from keras_initkit.checks import RULES
from keras_initkit.health import DEFAULT_THRESHOLDS, flagged, symmetric_units

RNG = np.random.default_rng(0)
X = RNG.normal(size=(128, 12)).astype("float32")
Y = RNG.integers(0, 3, size=128)


def _mlp(activation="relu", kernel="he_normal", bias="zeros", depth=3, width=16, batchnorm=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(
            width,
            activation=None if batchnorm else activation,
            kernel_initializer=kernel,
            bias_initializer=bias,
            name=f"dense_{i}",
        )(h)
        if batchnorm:
            h = keras.layers.BatchNormalization(name=f"bn_{i}")(h)
            h = keras.layers.Activation(activation, name=f"act_{i}")(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def _kinds(report):
    return {(f.layer, f.kind) for f in report.findings}


@pytest.mark.backend_agnostic
def test_healthy_model_has_no_findings():
    report = diagnose(_mlp(), X, Y)
    assert report.ok, str(report)
    assert report.findings == []
    assert set(report.metrics) == {"dense_0", "dense_1", "dense_2", "out"}
    assert 1e-3 < report.gradient_ratio < 1e3
    assert report.metrics["dense_1"]["dead_fraction"] == 0.0
    assert report.metrics["dense_1"]["symmetric_fraction"] == 0.0
    assert "No findings: the network looks healthy at initialization." in str(report)
    assert report.optimizer_steps == 0 and report.to_dict()["optimizer_steps"] == 0
    # After training it says so, not "at initialization".
    model = _mlp()
    model.fit(X, Y, epochs=1, batch_size=64, verbose=0)
    trained = diagnose(model, X, Y)
    assert trained.ok and trained.optimizer_steps == 2
    assert "No findings: the network looks healthy after 2 training steps." in str(trained)


def test_saturated_tanh_with_huge_weights_then_lsuv_fixes_it():
    model = _mlp("tanh", keras.initializers.RandomNormal(stddev=4.0))
    report = diagnose(model, X, Y)
    assert {("dense_0", "saturated"), ("dense_1", "saturated"), ("dense_2", "saturated")} <= (
        _kinds(report)
    )
    finding = next(f for f in report.findings if f.layer == "dense_1")
    assert finding.value == report.metrics["dense_1"]["saturated_fraction"] > 0.5
    assert "dense_1" in finding.message and "lsuv_init" in finding.message
    assert f"{finding.value:.0%}" in finding.message

    keras_initkit.lsuv_init(model, X, verbose=0)
    assert not any(f.kind == "saturated" for f in diagnose(model, X, Y).findings)


@pytest.mark.backend_agnostic
def test_dead_relu_layer_is_fully_dead():
    model = _mlp(bias=keras.initializers.Constant(-20.0))
    report = diagnose(model, X)
    for name in ("dense_0", "dense_1", "dense_2"):
        assert report.metrics[name]["dead_fraction"] == 1.0
        assert (name, "dead") in _kinds(report)
    message = next(f.message for f in report.findings if f.layer == "dense_0")
    assert message.startswith("dense_0: 100% of units dead")
    assert "He initialization" in message


def test_constant_kernel_is_symmetric_but_output_layer_is_not_judged():
    model = _mlp(kernel=keras.initializers.Constant(0.1))
    model.get_layer("out").kernel.assign(np.zeros((16, 3), "float32"))
    report = diagnose(model, X, Y)
    for name in ("dense_0", "dense_1", "dense_2"):
        assert report.metrics[name]["symmetric_fraction"] == 1.0
        assert (name, "symmetric") in _kinds(report)
    assert "symmetric_fraction" not in report.metrics["out"]


@pytest.mark.backend_agnostic
def test_one_initializer_instance_for_every_layer_is_a_finding():
    shared = keras.initializers.RandomNormal(stddev=0.3)
    model = _mlp(kernel=shared)
    report = diagnose(model, X)
    found = {f.layer: f for f in report.findings if f.rule == "identical_kernels"}
    assert set(found) == {"dense_1", "dense_2"}  # (16, 16); dense_0 (12, 16) and out differ
    for name, finding in found.items():
        assert report.metrics[name]["identical_kernels"] == len(found) - 1
        assert finding.kind == "symmetric"
        assert all(f"`{other}`" in finding.observation for other in set(found) - {name})
        assert "RandomNormal" in finding.observation and "own initializer" in finding.fix
    assert "identical_kernels" not in report.metrics["out"]
    fresh = diagnose(_mlp(kernel="glorot_uniform"), X)
    assert not [f for f in fresh.findings if f.rule == "identical_kernels"]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("seed", [1, None])
def test_multi_head_attention_with_a_seeded_initializer_has_equal_projections(seed):
    # Keras clones the initializer's config, seed included, for query, key and value
    inputs = keras.Input((10, 16))
    init = keras.initializers.RandomNormal(stddev=0.1, seed=seed)
    attended = keras.layers.MultiHeadAttention(4, 8, kernel_initializer=init)(inputs, inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(attended)
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    report = diagnose(model, RNG.normal(size=(8, 10, 16)).astype("float32"))
    found = sorted(
        f.layer.rsplit("/", 1)[-1] for f in report.findings if f.rule == "identical_kernels"
    )
    assert found == (["key", "query", "value"] if seed is not None else []), str(report)


def test_symmetry_counts_identical_columns_and_biases():
    layer = keras.layers.Dense(4)
    layer.build((None, 3))
    layer.kernel.assign(np.array([[1, 1, 2, 1], [0, 0, 0, 0], [3, 3, 3, 3]], "float32"))
    assert symmetric_units(layer) == (3, 4)  # columns 0, 1, 3 equal
    layer.bias.assign(np.array([0, 1, 0, 0], "float32"))
    assert symmetric_units(layer) == (2, 4)  # the bias tells unit 1 apart
    conv = keras.layers.Conv2D(3, 2, kernel_initializer="zeros")
    conv.build((None, 4, 4, 2))
    assert symmetric_units(conv) == (3, 3)


def test_batchnorm_mismatch_after_a_few_steps():
    model = _mlp(batchnorm=True)
    x = X * 4.0 + 3.0  # inputs far from the initial moving statistics (0, 1)
    model.fit(x, Y, epochs=1, batch_size=64, verbose=0)  # 2 steps at momentum 0.99
    report = diagnose(model, x)
    assert ("bn_0", "bn_mismatch") in _kinds(report)
    bn = report.metrics["bn_0"]
    assert flagged("bn_mean_shift", bn["bn_mean_shift"]) or flagged(
        "bn_std_ratio", bn["bn_std_ratio"]
    )
    assert "recalibrate_batchnorm" in next(
        f.message for f in report.findings if f.kind == "bn_mismatch"
    )
    keras_initkit.recalibrate_batchnorm(model, x, verbose=0)
    assert not any(f.kind == "bn_mismatch" for f in diagnose(model, x).findings)


@pytest.mark.backend_agnostic
def test_vanishing_gradients_in_a_deep_sigmoid_net():
    model = _mlp("sigmoid", keras.initializers.RandomNormal(stddev=0.05), depth=8)
    report = diagnose(model, X, Y)
    assert report.gradient_ratio < 1e-3
    finding = next(f for f in report.findings if f.kind == "vanishing_gradients")
    assert finding.layer == "dense_0"
    assert finding.value == report.gradient_ratio
    norms = [report.metrics[f"dense_{i}"]["gradient_norm"] for i in range(8)]
    assert norms == sorted(norms)  # shrinking towards the input


def finding_fix(finding):
    rule = RULES[finding.rule]
    return rule.fix_at_init or rule.fix


def test_vanishing_activations_through_depth():
    model = _mlp("tanh", keras.initializers.RandomNormal(stddev=0.05), depth=6)
    report = diagnose(model, X)
    finding = next(f for f in report.findings if f.kind == "vanishing_activations")
    assert finding.value < 1 / DEFAULT_THRESHOLDS["activation_std_ratio"]
    stds = [report.metrics[f"dense_{i}"]["activation_std"] for i in range(6)]
    assert finding.layer == "dense_5"  # the most extreme hidden layer: the deepest
    np.testing.assert_allclose(finding.value, stds[5] / stds[0], rtol=1e-6)
    assert finding.message.endswith("activations vanish through depth — " + finding_fix(finding))


def test_thresholds_override():
    model = _mlp("tanh", keras.initializers.RandomNormal(stddev=4.0))
    report = diagnose(model, X, thresholds={"saturated_fraction": 1.0})
    assert not any(f.kind == "saturated" for f in report.findings)
    assert report.thresholds["saturated_fraction"] == 1.0


def test_report_forms():
    model = _mlp(bias=keras.initializers.Constant(-20.0))
    report = diagnose(model, X, Y)
    assert isinstance(report, HealthReport) and not report.ok
    text = str(report)
    assert "100%!" in text  # flagged values are marked
    # A diagnosis first: one line per rule, its layers as ranges, then the table.
    for block in report.blocks():
        assert f"- {block.text(list(report.metrics))}" in text
        assert block.rule in text and block.worst.layer in text
    assert len(text.splitlines()) < len(report.metrics) + len(report.blocks()) + 6
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["layers"]["dense_0"]["dead_fraction"] == 1.0
    assert {f["kind"] for f in data["findings"]} >= {"dead"}
    markdown = report.to_markdown()
    assert "| layer |" in markdown and "**dead**" in markdown


def test_builds_unbuilt_sequential_and_changes_nothing():
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    report = diagnose(model, X)
    assert model.built and report.ok
    assert report.gradient_ratio is None  # no targets: no gradient pass
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    before = [np.array(v.numpy()).copy() for v in model.variables + model.optimizer.variables]
    diagnose(model, X, keras.utils.to_categorical(Y, 3))
    after = [np.array(v.numpy()) for v in model.variables + model.optimizer.variables]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)


def test_bad_input_raises_value_error():
    model = _mlp()
    uncompiled = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3)])
    nan = X.copy()
    nan[0, 0] = np.nan
    cases = [
        lambda: diagnose(uncompiled, X, Y),  # targets, no loss
        lambda: diagnose(model, X[:, :5]),  # wrong shape
        lambda: diagnose(model, nan),
        lambda: diagnose(model, X[:0]),
        lambda: diagnose(model, X, loss="mse"),  # a loss without targets
        lambda: diagnose(model, X, thresholds={"dead": 0.1}),
        lambda: diagnose(model, X, thresholds={"bn_std_ratio": 0.5}),
    ]
    for case in cases:
        with pytest.raises(ValueError, match="Received"):
            case()


def test_a_sixty_layer_saturated_net_is_one_line_of_diagnosis():
    inputs = keras.Input((8,))
    h = inputs
    for i in range(60):
        h = keras.layers.Dense(
            8,
            activation="tanh",
            kernel_initializer=keras.initializers.RandomNormal(stddev=4.0, seed=i),
            name=f"t{i}",
        )(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(h))
    report = diagnose(model, X[:, :8] if X.shape[1] >= 8 else np.tile(X, 8)[:, :8])
    head = str(report).split("\n", 8)[:6]
    saturated = [line for line in head if line.startswith("- saturated_fraction")]
    assert len(saturated) == 1 and "t0 … t59 (60 layers)" in saturated[0]
    assert len([f for f in report.findings if f.rule == "saturated_fraction"]) == 60


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [
        lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
        lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10),
        lambda: keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10),
    ],
    ids=["ResNet50", "MobileNetV2", "DenseNet121"],
)
def test_fresh_keras_applications_get_no_batchnorm_finding_but_one_note(build):
    model = build()
    x = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype("float32")
    report = diagnose(model, x)
    assert not [f for f in report.findings if f.kind == "bn_mismatch"], str(report)
    count = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert len(report.notes) == 1 and report.notes[0].startswith(f"{count} batch-norm layer(s)")
    assert f"Note: {count} batch-norm" in str(report)


@pytest.mark.backend_agnostic
def test_the_table_lists_layers_in_forward_order():
    """A nested model's layers came out reversed (Keras' recursive `_flatten_layers`
    lists a Sequential's `a, b, c` as `c, b, a`), and layers measured for their gradient
    only (a LayerNormalization) after the head."""
    keras.utils.set_random_seed(0)
    block = keras.Sequential(
        [keras.layers.Dense(16, activation="relu", name=n) for n in "abc"], name="block"
    )
    inputs = keras.Input((12,))
    h = keras.layers.LayerNormalization(name="norm")(block(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for report in (diagnose(model, X), diagnose(model, X, Y)):
        names = [n.split("/")[-1] for n in report.metrics]
        assert [n for n in names if n != "norm"] == ["a", "b", "c", "head"]
        rows = [line.split()[0] for line in str(report).splitlines()[3:] if line.strip()]
        assert rows == list(report.metrics)
    assert names == ["a", "b", "c", "norm", "head"]
    assert report.gradient_ratio == report.metrics["a"]["gradient_ratio"]  # the first


@pytest.mark.backend_agnostic
def test_a_run_of_findings_is_not_broken_by_layers_the_rule_does_not_measure():
    """Vanishing gradients in Dense layers with separate Activation layers between them
    read as one run, "dense_0 … dense_5", not six single layers (ConvNeXt's GELU layers
    split its 54 findings so); a layer the rule measured and passed still breaks it."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = inputs
    for i in range(8):
        init = keras.initializers.RandomNormal(stddev=0.05)
        h = keras.layers.Dense(16, kernel_initializer=init, name=f"dense_{i}")(h)
        h = keras.layers.Activation("sigmoid", name=f"act_{i}")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report = diagnose(model, X, Y)
    (block,) = [b for b in report.blocks() if b.rule == "vanishing"]
    assert len(block.layers) >= 3 and block.layers[0] == "dense_0"
    last = block.layers[-1]
    assert f"- vanishing: dense_0 … {last} ({len(block.layers)} layers)" in str(report)
    # Without the layers' metrics every Activation layer between splits the run.
    assert block.text(list(report.metrics)).startswith("vanishing: dense_0, dense_1, dense_2")
    # The warning a monitor prints reads the same.
    monitor = keras_initkit.callbacks.GradientMonitor((X, Y), verbose=1)
    with pytest.warns(UserWarning, match=f"dense_0 … {last}"):
        model.fit(X, Y, epochs=1, batch_size=128, callbacks=[monitor], verbose=0)


@pytest.mark.backend_agnostic
def test_unnormalized_inputs_are_told_apart_from_activations_vanishing_through_depth():
    """Pixels in 0–255 into a conv–batch-norm net: the first conv's output std is ~70,
    every later one ~0.6. It read 'activations vanish through depth'; the layers after
    the first agree, so the finding says the first layer alone is out of scale."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = inputs
    for k in range(4):
        h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"conv_{k}")(h)
        h = keras.layers.BatchNormalization(name=f"bn_{k}")(h)
        h = keras.layers.ReLU(name=f"relu_{k}")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(h))
    pixels = np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 3)).astype("float32")
    report = diagnose(model, pixels)
    (finding,) = [f for f in report.findings if f.rule == "vanishing_activations"]
    stds = [report.metrics[f"conv_{k}"]["activation_std"] for k in range(4)]
    assert stds[0] > 20 and max(stds[1:]) / min(stds[1:]) < 2
    assert (
        "conv_0 (" in finding.message and "the first layer, alone out of scale" in finding.message
    )
    assert "normalize the inputs" in finding.message and "through depth" not in finding.message
    # The same net on normalized inputs: no scale finding.
    scaled = diagnose(model, pixels / 255.0 - 0.5)
    assert not [f for f in scaled.findings if f.rule.endswith("_activations")]


def _small_convs(normalized):
    """Convs whose outputs are ~0.005 of the first's (NASNet's separable convs at
    init), each straight into a batch norm (`normalized`) or into a ReLU."""
    keras.utils.set_random_seed(0)
    small = keras.initializers.RandomNormal(stddev=0.002)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = keras.layers.BatchNormalization(name="stem_bn")(h) if normalized else h
    for k in range(3):
        h = keras.layers.ReLU()(h)
        h = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=small, name=f"conv_{k}")(h)
        if normalized:
            h = keras.layers.BatchNormalization(name=f"bn_{k}")(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h))


@pytest.mark.backend_agnostic
def test_a_layer_straight_into_a_normalization_is_not_judged_through_depth():
    """NASNetMobile read "separable_conv_2_reduction_left4_reduce_8: output std 0.00471
    is 4.5e-03 × that of stem_conv1: activations vanish through depth": every one of
    its separable convs runs straight into a batch norm, which normalizes that scale
    away. Without the batch norms, the same convs do vanish."""
    x = np.random.default_rng(0).standard_normal((32, 8, 8, 3)).astype("float32")
    with_bn = diagnose(_small_convs(normalized=True), x)
    assert (
        with_bn.metrics["conv_2"]["activation_std"]
        < 0.01 * with_bn.metrics["stem"]["activation_std"]
    )
    assert not [f for f in with_bn.findings if f.rule.endswith("_activations")], str(with_bn)
    without = diagnose(_small_convs(normalized=False), x)
    (finding,) = [f for f in without.findings if f.rule == "vanishing_activations"]
    assert finding.layer == "conv_2" and "through depth" in finding.message


def test_normalized_outputs_reads_every_call_and_every_consumer():
    from keras_initkit.probe.selection import normalized_outputs

    inputs = keras.Input((4,))
    into_norm = keras.layers.Dense(4, name="into_norm")
    also_add = keras.layers.Dense(4, name="also_add")
    shared = keras.layers.Dense(4, name="shared")
    a = keras.layers.LayerNormalization()(into_norm(inputs))
    b = also_add(a)
    c = keras.layers.Add()([keras.layers.BatchNormalization()(b), b])
    d = keras.layers.UnitNormalization()(shared(c))
    e = shared(d)  # its second call feeds the output: not normalized
    model = keras.Model(inputs, e)
    names = {layer.name for layer in model.layers if id(layer) in normalized_outputs(model)}
    assert names == {"into_norm"}


def _downsampling_conv_net():
    """Conv–batch-norm blocks from 8×8 down to 1×1, then a 9×9 depthwise conv at 1×1 (only
    its centre tap sees a pixel: output std ~0.04, as MobileNetV3's late depthwise convs)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = inputs
    for k, stride in enumerate((1, 2, 2, 2)):
        h = keras.layers.Conv2D(
            8, 3, strides=stride, padding="same", use_bias=False, name=f"conv_{k}"
        )(h)
        h = keras.layers.BatchNormalization(name=f"bn_{k}")(h)
        h = keras.layers.ReLU(name=f"relu_{k}")(h)
    h = keras.layers.DepthwiseConv2D(9, padding="same", use_bias=False, name="dw")(h)
    h = keras.layers.BatchNormalization(name="bn_dw")(h)
    h = keras.layers.Activation("hard_sigmoid", name="gate")(h)
    h = keras.layers.Conv2D(16, 1, name="pw")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h))


@pytest.mark.backend_agnostic
def test_unnormalized_inputs_are_named_where_the_later_layers_spread_widely():
    """MobileNetV3Small on pixels in 0–255 read "activations vanish through depth" and
    "use He ... or lsuv_init": its late depthwise convs (1×1 spatial) spread the layers
    after the first beyond √100, so the first-layer test did not apply. The layers after
    the first stay within 100× of the second, the first is ~200× their median and far
    from unit scale: the inputs are named, and the fix is to normalize them."""
    model = _downsampling_conv_net()
    pixels = np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 3)).astype("float32")
    report = diagnose(model, pixels)
    stds = [report.metrics[n]["activation_std"] for n in ("conv_0", "conv_1", "conv_2", "conv_3")]
    stds.append(report.metrics["dw"]["activation_std"])
    assert stds[0] > 20 and max(stds[1:]) / min(stds[1:]) > 10  # the case the old test missed
    (finding,) = [f for f in report.findings if f.rule.endswith("_activations")]
    assert finding.rule == "vanishing_activations" and finding.layer == "dw"
    assert (
        "conv_0 (" in finding.message and "the first layer, alone out of scale" in finding.message
    )
    assert "pixels in 0–255?" in finding.message and "through depth" not in finding.message
    assert finding.message.endswith(
        "— normalize the inputs (a keras.layers.Rescaling or Normalization layer first)."
    )
    assert "lsuv_init" not in finding.message and "He (ReLU)" not in finding.message
    # The summary line gives the same fix, not the initialization's.
    line = next(line for line in str(report).splitlines() if "vanishing_activations" in line)
    assert "normalize the inputs" in line and "lsuv_init" not in line
    # The same net on normalized inputs: the same later layers, no finding.
    scaled = diagnose(model, pixels / 127.5 - 1.0)
    assert not [f for f in scaled.findings if f.rule.endswith("_activations")]
    np.testing.assert_allclose(scaled.metrics["dw"]["activation_std"], stds[-1], rtol=0.2)


@pytest.mark.parametrize(
    "stds, vanishing, out_of_scale",
    [
        ([74.8, 0.19, 0.35, 0.6, 0.9, 1.2, 0.02, 0.0068, 0.13], True, True),  # MobileNetV3
        ([70.0, 0.6, 0.62, 0.58], True, True),  # conv–batch-norm, pixels in 0–255
        ([0.002, 0.6, 0.5, 40.0], False, True),  # inputs ×1e-3: the mirror image
        ([1.0, 0.005, 0.004, 0.006], True, False),  # in scale, then a collapse: depth
        ([0.17 * 0.2**k for k in range(6)], True, False),  # tanh, too small an init
        ([14 * 0.2**k for k in range(6)], True, False),  # 0–255 and depth: depth stands
        ([3.0, 1.5, 1.4, 0.02], True, False),  # first hardly off: not the inputs
        ([70.0, 0.6, 0.62, 0.58], False, False),  # first above the rest: not exploding
    ],
)
def test_first_layer_out_of_scale_tells_the_inputs_from_depth(stds, vanishing, out_of_scale):
    from keras_initkit.checks.activations import first_layer_out_of_scale

    found = first_layer_out_of_scale(stds, 100.0, vanishing)
    assert (found is not None) == out_of_scale


@pytest.mark.backend_agnostic
def test_a_diverged_network_with_bounded_activations_is_named_on_every_backend():
    """TensorFlow's histogram op rejects NaN: a diverged tanh or sigmoid layer made
    `diagnose` raise "Histogram values must not contain NaN" and a monitor crash `fit`,
    where JAX and torch gave the `non_finite` finding."""
    model = _mlp(activation="tanh", depth=3)
    kernel = model.get_layer("dense_1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    for report in (diagnose(model, X), diagnose(model, X, Y)):
        non_finite = [f.layer for f in report.findings if f.rule == "non_finite"]
        assert non_finite == ["dense_1", "dense_2", "out"], str(report)
        assert np.isnan(report.metrics["dense_1"]["saturated_fraction"])
    monitor = keras_initkit.callbacks.SaturationMonitor(X, verbose=0)
    monitor.set_model(model)
    monitor.on_train_begin()
    assert {f.rule for f in monitor.findings} == {"non_finite"}


@pytest.mark.backend_agnostic
def test_a_diverged_network_is_named_as_such_not_as_dead_units():
    """A NaN output is never positive, so a diverged ReLU layer read "100% of units dead"
    with the fix "use He initialization"; the summary blamed "fewer than two kernel
    layers". Now `non_finite` names it and replaces the layer's other forward findings."""
    model = _mlp(activation="relu", depth=3)
    kernel = model.get_layer("dense_1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))  # as a blown-up SGD step leaves it
    report = diagnose(model, X, Y)
    by_rule = {}
    for f in report.findings:
        by_rule.setdefault(f.rule, []).append(f.layer)
    assert by_rule["non_finite"] == ["dense_1", "dense_2", "out"]
    assert "dead_fraction" not in by_rule and "saturated_fraction" not in by_rule
    assert len(report.findings) == len({(f.layer, f.rule) for f in report.findings})
    assert report.metrics["dense_0"]["activation_std"] > 0  # before the NaN: measured as ever
    assert np.isnan(report.metrics["dense_1"]["dead_fraction"])  # not "100% dead"
    text = str(report)
    assert "the network diverged" in text and "the loss is not finite" in text
    assert "fewer than two kernel layers" not in text
    row = next(line for line in text.splitlines() if line.startswith("dense_1 "))
    assert "nan!" in row and "%" not in row.split("relu", 1)[1].split()[2]


@pytest.mark.backend_agnostic
def test_a_dead_unit_monitor_alone_names_a_diverged_layer():
    from keras_initkit.callbacks import DeadUnitMonitor

    model = _mlp(activation="relu", depth=3)
    kernel = model.get_layer("dense_1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    monitor = DeadUnitMonitor(X, verbose=0)
    monitor.set_model(model)
    monitor.on_train_begin()
    monitor.on_epoch_begin(0)
    monitor.on_epoch_end(0, {})
    monitor.on_train_end()
    assert {(f.layer, f.rule) for f in monitor.findings} == {
        ("dense_1", "non_finite"),
        ("dense_2", "non_finite"),
    }
    assert np.isnan(monitor.latest["dense_1"]["dead_fraction"])
    assert monitor.latest["dense_0"]["dead_fraction"] < 0.5


@pytest.mark.backend_agnostic
def test_batch_norm_after_a_diverged_layer_gets_no_mismatch_finding():
    """Its input holds NaN, so its moving statistics read "off by nan": the finding
    belongs to the layer that diverged (`non_finite`)."""
    model = _mlp(activation="relu", depth=3, batchnorm=True)
    for name in ("bn_0", "bn_1", "bn_2"):  # trained statistics, so the mismatch is judged
        layer = model.get_layer(name)
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 3.0, "float32"))
    kernel = model.get_layer("dense_1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    report = diagnose(model, X, Y)
    mismatch = {f.layer for f in report.findings if f.rule in ("bn_mean_shift", "bn_std_ratio")}
    assert mismatch == {"bn_0"}  # before the NaN: judged as ever
    assert {"dense_1", "dense_2"} <= {f.layer for f in report.findings if f.rule == "non_finite"}


@keras.saving.register_keras_serializable("initkit_tests")
class _PreNorm(keras.layers.Layer):
    """keras_hub's pre-norm blocks: the Dense is created before the LayerNorm it follows."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(16, activation="relu", name="inner")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        return self.inner(self.norm(x))


@pytest.mark.backend_agnostic
def test_a_gradient_only_layer_inside_a_custom_block_is_placed_by_the_call_order(tmp_path):
    """Placed by the order the block created its sublayers in, GPT2's pre-norm
    LayerNorm came after the attention it runs before (diagnose, the monitor's record)."""
    from keras_initkit.callbacks import TrainingMonitor
    from keras_initkit.dashboard import events

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(_PreNorm(name="block")(h)))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report = diagnose(model, X, Y)
    assert [n.split("/")[-1] for n in report.metrics] == ["a", "norm", "inner", "head"]
    monitor = TrainingMonitor((X[:32], Y[:32]), gradients=True, log_dir=tmp_path, verbose=0)
    model.fit(X, Y, batch_size=32, epochs=1, callbacks=[monitor], verbose=0)
    run = events.read_run(str(tmp_path / "initkit"))
    assert [n.split("/")[-1] for n in run.layers] == ["a", "norm", "inner", "head"]

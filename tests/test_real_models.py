"""Recurrent text models and Transformer encoders through every feature, on every backend."""

import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import keras_initkit as ik
from keras_initkit import probe
from keras_initkit.callbacks import TrainingMonitor
from keras_initkit.probe.gradients import GradientProbe

RNG = np.random.default_rng(0)


def _text_model():
    inputs = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(50, 16, mask_zero=True, name="embed")(inputs)
    h = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True, name="lstm"))(h)
    h = keras.layers.GRU(8, dropout=0.1, name="gru")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(h)
    return keras.Model(inputs, outputs), ("forward_lstm", "backward_lstm", "gru"), "gru"


def _encoder():
    inputs = keras.Input((10,), dtype="int32")
    h = keras.layers.Embedding(40, 16, mask_zero=True, name="embed")(inputs)
    attended = keras.layers.MultiHeadAttention(4, 4, dropout=0.1, name="mha")(h, h)
    h = keras.layers.LayerNormalization(name="norm1")(h + attended)
    ffn = keras.layers.Dense(32, activation="relu", name="ffn1")(h)
    h = keras.layers.LayerNormalization(name="norm2")(h + keras.layers.Dense(16, name="ffn2")(ffn))
    pooled = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(pooled)
    return keras.Model(inputs, outputs), ("mha",), "mha"


def _data(length, vocabulary):
    x = RNG.integers(1, vocabulary, (32, length))
    x[:10, length - 3 :] = 0  # padded tails
    return x, RNG.integers(0, 3, (32,))


CASES = {
    "text": (_text_model, lambda: _data(12, 50), "gate_saturated_fraction", "gru"),
    "encoder": (_encoder, lambda: _data(10, 40), "attention_entropy", "ffn1"),
}


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("case", sorted(CASES))
def test_diagnose_lsuv_and_a_monitored_fit(case, tmp_path):
    build, data, metric, weighted = CASES[case]
    keras.utils.set_random_seed(0)
    model, watched, tagged = build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = data()

    before = _numpy(model.variables)
    report = ik.diagnose(model, x, y)
    for name in watched:
        assert metric in report.metrics[name], str(report)
    for old, new in zip(before, _numpy(model.variables)):  # a probe changes nothing
        np.testing.assert_array_equal(old, new)

    lsuv = ik.lsuv_init(model, x, verbose=0)
    assert lsuv["head"].converged
    if case == "text":
        assert {r.name for r in lsuv.layers if r.skipped} == set(watched)

    monitor = TrainingMonitor((x, y), log_dir=tmp_path, gradients=True, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[monitor], verbose=0)
    assert len(history.history[f"{metric}/{tagged}"]) == 2
    acc = event_accumulator.EventAccumulator(
        os.path.join(str(tmp_path), "initkit"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert f"{metric}/{tagged}" in tags and f"gradient_norm/{weighted}" in tags


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fit_with_monitors_ends_bit_identical_to_one_without(case):
    build, data, _, _ = CASES[case]
    x, y = data()
    results = []
    for monitored in (False, True):
        keras.utils.set_random_seed(1)
        model, _, _ = build()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        callbacks = [TrainingMonitor((x, y), update_freq=1, gradients=True, verbose=0)]
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                  callbacks=callbacks if monitored else [])  # fmt: skip
        results.append(_numpy(model.variables + model.optimizer.variables))
    for plain, monitored in zip(*results):
        np.testing.assert_array_equal(plain, monitored)


APPLICATIONS = ["ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121"]


@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_the_probes_pass_computes_what_the_model_computes(name):
    """Interception changes nothing in a real model: the fused gradient pass's loss is the
    loss of the model's own output (logits, inference mode), and every site the probe
    plans is measured (none skipped as a shared layer, or under another's name)."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    x = RNG.normal(size=(8, 32, 32, 3)).astype("float32")
    reducers = [probe.ActivationMoments(), probe.Saturation(), probe.DeadUnits()]
    forward = probe.Probe(model, reducers + [probe.BatchNormStatistics()], mode="inference")
    planned = {site.name for site in forward.sites}

    def mean_square(_, y_pred):
        return keras.ops.mean(keras.ops.square(y_pred))

    gradients = GradientProbe(model, loss=mean_square, forward=forward, mode="inference")
    result = gradients.run((x, np.zeros((8, 1), "float32")))
    logits = keras.ops.convert_to_numpy(model(x, training=False)).astype("float64")
    assert result.loss == pytest.approx(float(np.mean(logits**2)), rel=1e-5)
    assert set(result.forward.metrics) == planned
    assert len(planned) > 100


@pytest.mark.slow
def test_a_keras_hub_gpt2_backbone_built_from_a_config():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=200,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
    )
    tokens = RNG.integers(1, 200, (8, 16))
    mask = np.ones_like(tokens, dtype=bool)
    mask[:3, 12:] = False
    x = {"token_ids": tokens, "padding_mask": mask}
    report = ik.diagnose(backbone, x)
    entropies = {
        n: v["attention_entropy"] for n, v in report.metrics.items() if "attention_entropy" in v
    }
    assert len(entropies) == 2 and all(0 < e <= 1 for e in entropies.values()), str(report)
    lsuv = ik.lsuv_init(backbone, x, verbose=0)
    assert lsuv.converged, str(lsuv)


@pytest.mark.slow
def test_a_keras_hub_llama_backbone_with_a_language_model_head():
    """keras_hub's LlamaAttention passes one initializer instance to its four
    projections: its key and value kernels are equal, and diagnose says so. It returns
    no attention weights; they are measured all the same. The backbone
    holds a weight the loss never reads (the untied `reverse_embeddings`): the gradient
    pass gives it a zero gradient (TensorFlow raised)."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=100,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
    )
    inputs = {
        "token_ids": keras.Input((12,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((12,), dtype="int32", name="padding_mask"),
    }
    logits = keras.layers.Dense(100, name="lm_head")(backbone(inputs))
    model = keras.Model(inputs, logits)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tokens = RNG.integers(1, 100, (8, 12))
    mask = np.ones_like(tokens)
    mask[:3, 9:] = 0
    x, y = {"token_ids": tokens, "padding_mask": mask}, RNG.integers(0, 100, (8, 12))
    report = ik.diagnose(model, x, y)
    twins = {f.layer for f in report.findings if f.rule == "identical_kernels"}
    assert twins == {
        f"transformer_layer_{i}/self_attention/{p}" for i in (0, 1) for p in ("key", "value")
    }, str(report)
    # its attention returns no weights: measured from its Softmax layer (TensorFlow) or
    # beside its keras.ops.dot_product_attention call (JAX, torch)
    entropies = [
        v["attention_entropy"] for v in report.metrics.values() if "attention_entropy" in v
    ]
    assert len(entropies) == 2 and all(0 < e <= 1 for e in entropies), str(report)
    assert report.loss == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["EfficientNetB0"])  # ResNet50 passes too (45 s more)
def test_every_feature_on_a_keras_application(name, tmp_path):
    """diagnose, a monitored fit, lsuv_init and recalibrate_batchnorm on a real
    architecture (EfficientNet: swish, depthwise convolutions, squeeze-and-excitation
    sigmoids, batch norm throughout); recalibrated on the batch it is then diagnosed on,
    its batch norm matches that batch exactly."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    if name == "EfficientNetB0":  # it rescales and normalizes pixels itself
        x = RNG.uniform(0, 255, size=(64, 32, 32, 3)).astype("float32")
    else:  # ResNet50 expects preprocessed inputs
        x = RNG.normal(size=(64, 32, 32, 3)).astype("float32")
    y = RNG.integers(0, 10, 64)
    fresh = ik.diagnose(model, x[:32], y[:32])
    assert not [f for f in fresh.findings if f.kind == "bn_mismatch"], str(fresh)
    assert fresh.gradient_ratio is not None and fresh.loss is not None
    monitor = TrainingMonitor((x[:32], y[:32]), gradients=True, log_dir=tmp_path, verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[monitor], verbose=0)
    assert {f.rule for f in monitor.findings} == {"bn_init_weight"}  # 2 steps at momentum 0.99
    batchnorms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert len({f.layer for f in monitor.findings}) == batchnorms
    report = ik.lsuv_init(model, x[:32], verbose=0)
    assert report.converged and len(report.layers) > 50
    recalibrated = ik.recalibrate_batchnorm(model, x[:32], verbose=0)
    assert len(recalibrated.layers) == batchnorms
    after = ik.diagnose(model, x[:32])
    shifts = [m["bn_mean_shift"] for m in after.metrics.values() if "bn_mean_shift" in m]
    ratios = [m["bn_std_ratio"] for m in after.metrics.values() if "bn_std_ratio" in m]
    assert len(shifts) == batchnorms and max(shifts) < 1e-3 and max(ratios) < 1.01

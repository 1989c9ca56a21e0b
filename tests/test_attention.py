"""Attention entropy of MultiHeadAttention layers, against NumPy on the layer's own weights."""

import keras
import numpy as np
import pytest

import keras_initkit
from keras_initkit import probe

pytestmark = pytest.mark.backend_agnostic


def _model(stddev, dropout=0.0):
    inputs = keras.Input((10,), dtype="int32")
    embed = keras.layers.Embedding(
        30,
        16,
        mask_zero=True,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=0),
        name="embed",
    )
    mha = keras.layers.MultiHeadAttention(
        4,
        8,
        dropout=dropout,
        kernel_initializer=keras.initializers.RandomNormal(stddev=stddev, seed=1),
        name="mha",
    )
    h = embed(inputs)
    outputs = keras.layers.GlobalAveragePooling1D()(mha(h, h))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(outputs)), embed, mha


def _tokens():
    x = np.random.default_rng(0).integers(1, 30, (8, 10))
    x[:3, 6:] = 0  # padded: masked keys and queries
    return x


def _reference(embed, mha, x):
    e = embed(x)
    mask = keras.ops.convert_to_tensor(x != 0)
    _, scores = mha(e, e, query_mask=mask, value_mask=mask, return_attention_scores=True)
    p = keras.ops.convert_to_numpy(scores).astype(np.float64)  # (B, N, Tq, Tk)
    valid = x != 0
    n = valid.sum(axis=1)[:, None, None]
    h = -(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1) / np.log(n)
    rows = np.broadcast_to(valid[:, None, :], h.shape)
    entropy = np.array([h[:, k][rows[:, k]].mean() for k in range(h.shape[1])])
    top = np.array([p.max(axis=-1)[:, k][rows[:, k]].mean() for k in range(h.shape[1])])
    return entropy, top


@pytest.mark.parametrize("stddev", [0.05, 1.0])
def test_entropy_per_head_matches_numpy_with_padded_queries_and_keys_left_out(stddev):
    model, embed, mha = _model(stddev, dropout=0.3)
    x = _tokens()
    weights = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    values = probe.Probe(model, [probe.AttentionEntropy()]).run(x).metrics["mha"]
    entropy, top = _reference(embed, mha, x)
    np.testing.assert_allclose(values["attention_entropy_by_head"], entropy, atol=1e-4)
    np.testing.assert_allclose(values["attention_max_weight_by_head"], top, atol=1e-4)
    assert values["attention_entropy"] == pytest.approx(entropy.min(), abs=1e-4)
    if stddev < 0.1:  # small logits: nearly uniform attention
        assert values["attention_entropy"] > 0.99
    else:  # large query/key weights: peaked heads
        assert values["attention_entropy"] < 0.6
    for old, v in zip(weights, model.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), old)


def test_probe_hands_on_the_layers_output_and_keeps_a_requested_scores_output():
    model, _, _ = _model(1.0)
    x = _tokens()
    seen = {}

    class Last(probe.Reducer):
        name = "last"
        merge = {"out": "last"}

        def applies(self, site):
            return site.name == "head"

        def reduce(self, site, inputs, pre, outputs):
            return {"out": keras.ops.cast(outputs, "float32")}

        def finalize(self, site, stats):
            seen["out"] = stats["out"]
            return {}

    probe.Probe(model, [probe.AttentionEntropy(), Last()], mode="inference").run(x)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(seen["out"], expected, rtol=1e-4, atol=1e-5)

    inputs = keras.Input((5, 8))
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha2")
    out, scores = mha(inputs, inputs, return_attention_scores=True)
    both = keras.Model(inputs, [out, scores])
    r = probe.Probe(both, [probe.AttentionEntropy()]).run(np.ones((2, 5, 8), "float32"))
    assert r.metrics["mha2"]["attention_entropy"] == pytest.approx(1.0, abs=1e-5)


def _encoder_over_embedding(blocks=2, width=64, heads=4):
    """Transformer blocks over a Keras Embedding (uniform +-0.05): the first block's
    attention logits are tiny at initialization, its attention uniform."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), dtype="int32")
    h = keras.layers.Embedding(100, width)(inputs)
    for _ in range(blocks):
        a = keras.layers.MultiHeadAttention(heads, width // heads)(h, h)
        h = keras.layers.LayerNormalization()(h + a)
        f = keras.layers.Dense(2 * width, activation="relu")(h)
        h = keras.layers.LayerNormalization()(h + keras.layers.Dense(width)(f))
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.backend_agnostic
def test_query_and_key_projections_are_reported_but_not_judged_vanishing():
    model = _encoder_over_embedding()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 100, (32, 16)).astype("int32"), rng.integers(0, 5, 32)
    report = keras_initkit.diagnose(model, x, y)
    scores = {
        name: v["gradient_ratio"]
        for name, v in report.metrics.items()
        if name.split("/")[-1] in ("query", "key") and "gradient_ratio" in v
    }
    assert len(scores) == 4  # two blocks' query and key, reported
    assert min(scores.values()) < 1e-3  # what the vanishing rule would flag
    assert not [f for f in report.findings if f.rule == "vanishing"]
    # The table marks a value `!` only where its layer has that finding.
    rows = {line.split()[0]: line for line in str(report).splitlines() if line.split()}
    assert all("!" not in rows[name] for name in scores)
    # The rule itself still judges every other layer the same way.
    strict = keras_initkit.diagnose(model, x, y, thresholds={"gradient_ratio": 1.0})
    flagged = {f.layer for f in strict.findings if f.rule == "vanishing"}
    assert flagged and not flagged & set(scores)
    rows = {line.split()[0]: line for line in str(strict).splitlines() if line.split()}
    assert all("!" in rows[name] for name in flagged)
    assert all("!" not in rows[name] for name in scores)
    # Nor do they start the first-to-last ratio: the first value projection does.
    ratios = [(n, v["gradient_ratio"]) for n, v in report.metrics.items() if "gradient_ratio" in v]
    assert ratios[0][0].endswith("/query")  # the first kernel layer in forward order
    judged = [r for name, r in ratios if name not in scores]
    assert report.gradient_ratio == judged[0]
    assert f"first/last layer: {judged[0]:.3g}" in str(report)
    # suggest_initializer's gradient term measures the same ratio: applied, the
    # winner's figure is what diagnose finds on the model.
    suggested = keras_initkit.suggest_initializer(
        model, x, y, candidates=["he_normal"], apply=True, verbose=0
    )
    again = keras_initkit.diagnose(model, x, y)
    assert suggested.best.gradient_ratio == pytest.approx(again.gradient_ratio, rel=1e-3)


@pytest.mark.backend_agnostic
def test_the_attention_softmax_is_left_to_the_entropy():
    """Its output is the attention probabilities: mean 1 / keys by construction, their
    spread what the attention layer's entropy measures. A softmax elsewhere is measured."""
    inputs = keras.Input((6, 8))
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    h = keras.layers.Softmax(name="top_softmax")(h)
    model = keras.Model(inputs, h)
    sites = {s.name: s for s in probe.make_sites(model, probe.resolve_layers(model))}
    (inner,) = [
        s
        for s in sites.values()
        if isinstance(s.layer, keras.layers.Softmax) and s.name != "top_softmax"
    ]
    assert inner.role == "attention_weights"
    assert sites["top_softmax"].role is None
    x = np.random.default_rng(0).normal(size=(4, 6, 8)).astype("float32")
    report = keras_initkit.diagnose(model, x)
    assert inner.name not in report.metrics
    assert "activation_std" in report.metrics["top_softmax"]
    assert "attention_entropy" in report.metrics["mha"]

"""Attention entropy of MultiHeadAttention layers, against NumPy on the layer's own weights."""

import keras
import numpy as np
import pytest

import keras_initkit
from keras_initkit import probe

pytestmark = pytest.mark.backend_agnostic


def _mha(**kwargs):
    return keras.layers.MultiHeadAttention(4, **kwargs)


def _gqa(key_dim, **kwargs):
    """4 query heads of `key_dim` sharing 2 key-value heads, where `_mha` has 4 heads."""
    return keras.layers.GroupQueryAttention(key_dim, 4, 2, **kwargs)


def _model(stddev, dropout=0.0, layer=_mha):
    inputs = keras.Input((10,), dtype="int32")
    embed = keras.layers.Embedding(
        30,
        16,
        mask_zero=True,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=0),
        name="embed",
    )
    mha = layer(
        key_dim=8,
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


class _Lengths(keras.utils.PyDataset):
    """Token batches of growing length (sequences padded per batch, as a text pipeline
    does), no targets."""

    def __init__(self, lengths):
        super().__init__()
        rng = np.random.default_rng(0)
        self.batches = [rng.integers(1, 50, (8, n)) for n in lengths]

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def test_a_causal_mask_over_batches_of_different_lengths():
    """TensorFlow traces the probe once lengths vary (`reduce_retracing`), the sequence
    axis unknown: the causal mask read `query.shape[1]` (None) and `diagnose` raised
    "Expected int32, but got None"."""
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(50, 16, name="embed")(inputs)
    mha = keras.layers.MultiHeadAttention(
        2, 8, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=1), name="mha"
    )
    h = keras.layers.GlobalAveragePooling1D()(mha(h, h, use_causal_mask=True))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    data = _Lengths((5, 7, 9, 11, 13))
    pooled = keras_initkit.diagnose(model, data).metrics["mha"]["attention_entropy"]
    each = [
        keras_initkit.diagnose(model, b).metrics["mha"]["attention_entropy"] for b in data.batches
    ]
    for batch, value in zip(data.batches, each):  # one batch: against NumPy
        e = model.get_layer("embed")(batch)
        _, scores = mha(e, e, use_causal_mask=True, return_attention_scores=True)
        p = keras.ops.convert_to_numpy(scores).astype(np.float64)[:, :, 1:]  # rows of >= 2 keys
        n = np.arange(2, batch.shape[1] + 1)[None, None, :]
        h = -(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1) / np.log(n)
        assert value == pytest.approx(h.mean(axis=(0, 2)).min(), rel=1e-4)
    assert min(each) - 1e-6 <= pooled <= max(each) + 1e-6


# Keras' own: GroupQueryAttention's projections drop its inputs' masks (it reads them first).
@pytest.mark.filterwarnings("ignore:Layer '(query|key|value)' .* mask attached:UserWarning")
def test_group_query_attention_is_measured_per_query_head():
    """`GroupQueryAttention` (4 query heads sharing 2 key-value heads) had no row: only
    `MultiHeadAttention` and its subclasses were recognised."""
    model, embed, gqa = _model(1.0, dropout=0.3, layer=_gqa)
    x = _tokens()
    values = probe.Probe(model, [probe.AttentionEntropy()]).run(x).metrics["mha"]
    entropy, top = _reference(embed, gqa, x)
    assert len(entropy) == 4
    np.testing.assert_allclose(values["attention_entropy_by_head"], entropy, rtol=1e-4)
    np.testing.assert_allclose(values["attention_max_weight_by_head"], top, rtol=1e-4)
    assert "mha" in keras_initkit.diagnose(model, x).metrics


def test_masks_passed_as_arguments_are_those_the_entropy_honours():
    """`mha(q, v, query_mask=..., value_mask=...)` on unmasked tensors: the masks Keras
    applied were not read (only tensors' own Keras masks were), so padded keys counted."""
    tokens = _tokens()
    inputs = keras.Input((10,), dtype="int32")
    embed = keras.layers.Embedding(30, 16, name="embed")  # no mask_zero: no Keras mask
    mha = keras.layers.MultiHeadAttention(4, 8, name="mha")
    h = embed(inputs)
    mask = keras.ops.not_equal(inputs, 0)
    pooled = keras.layers.GlobalAveragePooling1D()(mha(h, h, query_mask=mask, value_mask=mask))
    model = keras.Model(inputs, pooled)
    values = probe.Probe(model, [probe.AttentionEntropy()]).run(tokens).metrics["mha"]
    entropy, top = _reference(embed, mha, tokens)
    np.testing.assert_allclose(values["attention_entropy_by_head"], entropy, rtol=1e-4)
    np.testing.assert_allclose(values["attention_max_weight_by_head"], top, rtol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_given_only_an_attention_mask_leaves_padded_queries_out(causal):
    """keras_hub's encoders pass their padding mask as `attention_mask=(B, 1, T)`, its
    decoders and-ed with the causal mask: padded query rows (entropy 1 with 80% padding)
    were averaged in, and a collapsed attention (0.03) read 0.8. In self-attention a
    position that may not attend to itself is padding."""
    tokens = _tokens()
    inputs = keras.Input((10,), dtype="int32")
    normal = keras.initializers.RandomNormal
    # No mask_zero: no Keras mask. Peaked attention: padded rows differ from real ones.
    embed = keras.layers.Embedding(30, 16, embeddings_initializer=normal(stddev=1.0, seed=0))
    mha = keras.layers.MultiHeadAttention(4, 8, kernel_initializer=normal(1.0, seed=1), name="mha")
    h = embed(inputs)
    mask = keras.ops.expand_dims(keras.ops.not_equal(inputs, 0), 1)  # (B, 1, T)
    if causal:
        mask = keras.ops.logical_and(mask, keras.ops.tril(keras.ops.ones((10, 10), "bool")))
    pooled = keras.layers.GlobalAveragePooling1D()(mha(h, h, attention_mask=mask))
    model = keras.Model(inputs, pooled)
    values = probe.Probe(model, [probe.AttentionEntropy()]).run(tokens).metrics["mha"]
    e = embed(tokens)
    allowed = (tokens != 0)[:, None, :]
    if causal:
        allowed = allowed & np.tril(np.ones((10, 10), bool))
    _, scores = mha(e, e, attention_mask=allowed, return_attention_scores=True)
    p = keras.ops.convert_to_numpy(scores).astype(np.float64)  # (B, N, Tq, Tk)
    n = np.broadcast_to(allowed, (8, 10, 10)).sum(axis=-1)[:, None, :]  # keys per query
    h = -(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1) / np.log(np.maximum(n, 2))
    rows = np.broadcast_to(((tokens != 0)[:, None, :]) & (n >= 2), h.shape)
    entropy = np.array([h[:, k][rows[:, k]].mean() for k in range(4)])
    np.testing.assert_allclose(values["attention_entropy_by_head"], entropy, rtol=1e-4)


def _probed_output(model, x):
    """`(probe result, the "head" layer's output)` of an inference-mode probe pass that
    measures attention entropy: what the probed model computes."""
    seen = {}

    class Last(probe.Reducer):
        name = "last"
        merge = {"out": "last"}

        def applies(self, site):
            return site.name == "head"

        def reduce(self, site, inputs, pre, outputs):
            return {"out": outputs}

        def finalize(self, site, stats):
            seen["out"] = stats["out"]
            return {}

    result = probe.Probe(model, [probe.AttentionEntropy(), Last()], mode="inference").run(x)
    return result, seen["out"]


def test_probe_hands_on_the_layers_output_and_keeps_a_requested_scores_output():
    model, _, _ = _model(1.0)
    x = _tokens()
    _, out = _probed_output(model, x)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

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


# Keras' single-head attention: `Attention` (Luong, dot product) and
# `AdditiveAttention` (Bahdanau). Their weights, `(batch, queries, keys)`, are measured
# with the same entropy as MultiHeadAttention's, as one head.

SINGLE_HEAD = [keras.layers.Attention, keras.layers.AdditiveAttention]


def _seq2seq(cls, dropout=0.0, stddev=1.0, dtype=None):
    """A seq2seq model: causal self-attention over the decoder's tokens, then
    cross-attention from the decoder to the encoder; token 0 pads (`mask_zero`). The
    embeddings are the same numbers on every backend."""
    encoder_in = keras.Input((9,), dtype="int32")
    decoder_in = keras.Input((7,), dtype="int32")

    def embed(name, seed):
        values = np.random.default_rng(seed).normal(scale=stddev, size=(30, 8))
        init = keras.initializers.Constant(values.astype("float32"))
        return keras.layers.Embedding(30, 8, mask_zero=True, embeddings_initializer=init, name=name)

    encoded = embed("encoder_embed", 0)(encoder_in)
    decoded = embed("decoder_embed", 1)(decoder_in)
    self_attention = cls(dropout=dropout, seed=2, dtype=dtype, name="self_attention")
    h = self_attention([decoded, decoded], use_causal_mask=True)
    cross = cls(dropout=dropout, seed=3, dtype=dtype, name="cross_attention")([h, encoded])
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(cross))
    return keras.Model([encoder_in, decoder_in], outputs)


def _seq2seq_tokens():
    rng = np.random.default_rng(0)
    encoder, decoder = rng.integers(1, 30, (6, 9)), rng.integers(1, 30, (6, 7))
    encoder[1, 5:] = 0
    encoder[2, 3:] = 0
    encoder[3] = 0  # no key at all: its cross-attention rows are left out (no NaN)
    decoder[1, 4:] = 0  # padded queries, and padded keys of the self-attention
    decoder[4, 2:] = 0
    return [encoder, decoder]


def _numpy(v):
    return keras.ops.convert_to_numpy(v).astype(np.float64)


def _softmax(logits, allowed):
    z = np.where(allowed, logits, -np.inf)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def _logits(layer, q, k):
    """The layer's attention logits (Keras' `_calculate_scores`), in NumPy."""
    if isinstance(layer, keras.layers.AdditiveAttention):
        scale = _numpy(layer.scale) if layer.use_scale else 1.0
        return (scale * np.tanh(q[..., :, None, :] + k[..., None, :, :])).sum(axis=-1)
    logits = q @ np.swapaxes(k, -1, -2)
    return logits * _numpy(layer.scale) if layer.use_scale else logits


def _entropy_reference(logits, allowed, queries):
    """Mean normalized entropy and mean largest weight over the rows of valid
    `queries` that may attend to two keys or more (`allowed`)."""
    allowed = np.broadcast_to(allowed, logits.shape)
    n = allowed.sum(axis=-1)
    rows = np.broadcast_to(queries, n.shape) & (n >= 2)
    p = _softmax(logits[rows], allowed[rows])
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return (-plogp.sum(axis=-1) / np.log(n[rows])).mean(), p.max(axis=-1).mean()


def _seq2seq_reference(model, x):
    """Both attention layers' entropy and largest weight, the model recomputed in NumPy."""
    encoder_x, decoder_x = x
    encoded = _numpy(model.get_layer("encoder_embed").embeddings)[encoder_x]
    decoded = _numpy(model.get_layer("decoder_embed").embeddings)[decoder_x]
    keys, queries = encoder_x != 0, decoder_x != 0
    self_layer, cross_layer = model.get_layer("self_attention"), model.get_layer("cross_attention")
    causal = np.tril(np.ones((7, 7), bool))
    self_allowed = queries[:, None, :] & causal  # every decoder row may attend to its token 0
    self_logits = _logits(self_layer, decoded, decoded)
    h = _softmax(self_logits, self_allowed) @ decoded * queries[..., None]
    cross_logits = _logits(cross_layer, h, encoded)
    return {
        "self_attention": _entropy_reference(self_logits, self_allowed, queries),
        "cross_attention": _entropy_reference(cross_logits, keys[:, None, :], queries),
    }


@pytest.mark.parametrize("cls", SINGLE_HEAD, ids=lambda c: c.__name__)
def test_single_head_entropy_matches_numpy_with_padding_and_a_causal_mask(cls):
    model = _seq2seq(cls, dropout=0.3)  # dropout: off in the probe, as for every layer
    x = _seq2seq_tokens()
    weights = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    result = probe.Probe(model, [probe.AttentionEntropy()]).run(x)
    for name, (entropy, top) in _seq2seq_reference(model, x).items():
        values = result.metrics[name]
        assert values["attention_entropy_by_head"].shape == (1,)
        assert values["attention_entropy"] == pytest.approx(entropy, abs=1e-4)
        assert values["attention_max_weight"] == pytest.approx(top, abs=1e-4)
        assert 0.05 < entropy < 0.99  # neither uniform nor one-hot
    for old, v in zip(weights, model.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), old)


@pytest.mark.parametrize("cls", SINGLE_HEAD, ids=lambda c: c.__name__)
def test_single_head_output_is_bit_identical_and_the_layers_unchanged(cls):
    model = _seq2seq(cls)
    x = _seq2seq_tokens()
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    runner = probe.Probe(model, [probe.AttentionEntropy()], mode="inference")
    assert [s.kind for s in runner.sites] == ["attention", "attention"]
    outputs, _ = runner.forward(x, False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outputs), expected)
    assert set(runner.run(x).metrics) == {"self_attention", "cross_attention"}
    layer = model.get_layer("cross_attention")
    assert "call" not in vars(layer)  # the layer's own call again
    q = keras.ops.ones((2, 3, 8))
    assert keras.ops.is_tensor(layer([q, q]))  # the output alone, no scores
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), expected)


def test_explicit_masks_a_query_without_keys_and_requested_scores():
    """Masks passed as `mask=[query_mask, value_mask]`, the scores asked for by the model:
    the structure `(output, scores)` kept; a query that may attend to no key (all values
    masked) or to one key is left out, without NaN."""
    query_in, value_in = keras.Input((5, 4)), keras.Input((6, 4))
    query_mask_in = keras.Input((5,), dtype="bool")
    value_mask_in = keras.Input((6,), dtype="bool")
    attention = keras.layers.Attention(use_scale=True, name="luong")
    output, scores = attention(
        [query_in, value_in], mask=[query_mask_in, value_mask_in], return_attention_scores=True
    )
    model = keras.Model([query_in, value_in, query_mask_in, value_mask_in], [output, scores])
    rng = np.random.default_rng(1)
    q, v = (rng.normal(size=(4, t, 4)).astype("float32") for t in (5, 6))
    query_mask, value_mask = np.ones((4, 5), bool), np.ones((4, 6), bool)
    query_mask[0, 3:] = False
    value_mask[1] = False  # no key for any query of sample 1
    value_mask[2, 1:] = False  # one key: nothing to spread over
    value_mask[3, 4:] = False
    x = [q, v, query_mask, value_mask]
    expected = [keras.ops.convert_to_numpy(t) for t in model(x)]
    runner = probe.Probe(model, [probe.AttentionEntropy()])
    outputs, _ = runner.forward(x, False)
    assert isinstance(outputs, (list, tuple)) and len(outputs) == 2
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
    values = runner.run(x).metrics["luong"]
    assert np.isfinite(values["attention_entropy_by_head"]).all()
    allowed = np.broadcast_to(value_mask[:, None, :], (4, 5, 6))
    entropy, top = _entropy_reference(_logits(attention, q, v), allowed, query_mask)
    assert values["attention_entropy"] == pytest.approx(entropy, abs=1e-4)
    assert values["attention_max_weight"] == pytest.approx(top, abs=1e-4)


def test_call_attention_binds_positional_masks_and_keeps_each_output_form():
    """The probe sees the arguments as given to `call`: a mask or
    `return_attention_scores` may come positionally, and the result has the form asked for."""
    layer = keras.layers.AdditiveAttention(name="bahdanau")
    rng = np.random.default_rng(2)
    q, v = (keras.ops.convert_to_tensor(rng.normal(size=(2, t, 4)), "float32") for t in (3, 5))
    mask_values = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    value_mask = keras.ops.convert_to_tensor(mask_values)
    layer([q, v])
    masks = [None, value_mask]
    plain = keras.ops.convert_to_numpy(layer.call([q, v], mask=masks, use_causal_mask=True))
    both = layer.call([q, v], mask=masks, use_causal_mask=True, return_attention_scores=True)
    both = [keras.ops.convert_to_numpy(t) for t in both]
    forms = {
        "keywords": (([q, v],), {"mask": masks, "use_causal_mask": True}),
        "positional": (([q, v], masks), {"use_causal_mask": True}),
        "scores positional": (([q, v], masks, False, True), {"use_causal_mask": True}),
    }
    for form, (args, kwargs) in forms.items():
        weights, result = probe.attention.call_attention(layer, layer.call, args, kwargs)
        if form == "scores positional":
            assert isinstance(result, tuple) and len(result) == 2, form
            for got, want in zip(result, both):
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
        else:
            assert keras.ops.is_tensor(result), form
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(result), plain)
        assert tuple(weights.scores.shape) == (2, 1, 3, 5), form
        allowed = np.broadcast_to(keras.ops.convert_to_numpy(weights.key_mask), (2, 3, 5))
        causal = np.tril(np.ones((3, 5), bool))
        np.testing.assert_array_equal(allowed, causal & mask_values[:, None, :], form)
        assert weights.query_mask is None, form


def test_single_head_attention_over_leading_batch_axes():
    """Inputs `(batch, groups, steps, dim)`: the weights `(batch, groups, queries, keys)`
    are measured as `batch * groups` sequences."""
    inputs = keras.Input((3, 6), dtype="int32")
    embed = keras.layers.Embedding(
        20,
        4,
        mask_zero=True,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=0),
    )
    h = embed(inputs)
    attention = keras.layers.Attention(name="luong")
    h = attention([h, h], use_causal_mask=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    x = np.random.default_rng(3).integers(1, 20, (4, 3, 6))
    x[0, 1, 3:] = 0
    x[2, :, 4:] = 0
    values = probe.Probe(model, [probe.AttentionEntropy()]).run(x).metrics["luong"]
    e = _numpy(embed.embeddings)[x]
    valid = x != 0
    allowed = valid[..., None, :] & np.tril(np.ones((6, 6), bool))
    entropy, top = _entropy_reference(_logits(attention, e, e), allowed, valid)
    assert values["attention_entropy"] == pytest.approx(entropy, abs=1e-4)
    assert values["attention_max_weight"] == pytest.approx(top, abs=1e-4)


@pytest.mark.parametrize("cls", SINGLE_HEAD, ids=lambda c: c.__name__)
def test_diagnose_has_a_row_for_luong_and_bahdanau_attention(cls):
    """Large logits (Luong: large embeddings; Bahdanau: a large scale, its logits being
    bounded by it): both layers' attention has collapsed onto single keys, and
    `diagnose` (forward and gradient pass) says so in their rows."""
    additive = cls is keras.layers.AdditiveAttention
    model = _seq2seq(cls, stddev=3.0 if additive else 30.0)
    if additive:
        for name in ("self_attention", "cross_attention"):
            model.get_layer(name).scale.assign(np.full((8,), 100.0, "float32"))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = _seq2seq_tokens()
    y = np.arange(6) % 2
    report = keras_initkit.diagnose(model, x, y)
    rows = {line.split()[0]: line for line in str(report).splitlines() if line.split()}
    for name in ("self_attention", "cross_attention"):
        assert report.metrics[name]["attention_entropy"] < 0.05
        assert "!" in rows[name]
    collapsed = {f.layer for f in report.findings if f.rule == "attention_entropy"}
    assert collapsed == {"self_attention", "cross_attention"}


@pytest.mark.parametrize("cls", SINGLE_HEAD, ids=lambda c: c.__name__)
def test_single_head_attention_in_float16_with_a_sample_without_keys(cls):
    """In float16 a row whose every key is masked can be NaN (torch: the masked logits
    overflow to -inf); it is left out, and the other rows measured."""
    model = _seq2seq(cls, dtype="mixed_float16")
    x = _seq2seq_tokens()  # encoder sample 3: all padding
    metrics = probe.Probe(model, [probe.AttentionEntropy()]).run(x).metrics
    for name, (entropy, top) in _seq2seq_reference(model, x).items():
        assert np.isfinite(metrics[name]["attention_entropy_by_head"]).all(), name
        assert metrics[name]["attention_entropy"] == pytest.approx(entropy, abs=1e-2), name
        assert metrics[name]["attention_max_weight"] == pytest.approx(top, abs=1e-2), name


def test_left_out_rows_do_not_count_whatever_their_weights():
    """`entropy` on weights whose left-out rows hold NaN: a padded query, a query that may
    attend to no key (one head, as for `Attention`, and two heads)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 2, 3, 4)) * 2.0
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    allowed = np.ones((2, 3, 4), bool)
    allowed[1, 2] = False  # sample 1, query 2: no key
    queries = np.array([[True, True, False], [True, True, True]])  # sample 0, query 2: padded
    p[1, :, 2] = np.nan
    p[0, :, 2] = np.nan
    rows = queries & allowed.any(axis=-1)
    expected = [
        -(p[:, k][rows] * np.log(p[:, k][rows])).sum(axis=-1).mean() / np.log(4) for k in range(2)
    ]
    for heads in (slice(0, 1), slice(0, 2)):
        weights = probe.attention.Weights(
            keras.ops.convert_to_tensor(p[:, heads], "float32"),
            keras.ops.convert_to_tensor(queries),
            keras.ops.convert_to_tensor(allowed),
        )
        h, top, valid = (keras.ops.convert_to_numpy(t) for t in probe.attention.entropy(weights))
        assert np.isfinite(h).all() and np.isfinite(top).all()
        np.testing.assert_allclose(valid, rows.mean())
        np.testing.assert_allclose(h / valid, expected[heads], atol=1e-5)


class _HubStyle(keras.layers.Layer):
    """An attention layer as keras_hub writes them (LlamaAttention, GemmaAttention):
    query, key and value projections, grouped-query heads, a `Softmax` layer, and no
    weights returned. `fused`: `keras.ops.dot_product_attention` computes it instead
    (keras_hub on JAX and torch), with the padding mask or a causal mask."""

    def __init__(self, fused=False, causal=False, stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.fused, self.causal, self.stddev = fused, causal, stddev

    def build(self, shape):
        def projection(equation, out, name, seed):
            init = keras.initializers.RandomNormal(stddev=self.stddev, seed=seed)
            layer = keras.layers.EinsumDense(equation, out, kernel_initializer=init, name=name)
            layer.build(shape)
            return layer

        self._query_dense = projection("btd,dnh->btnh", (None, 4, 8), "query", 1)
        self._key_dense = projection("btd,dnh->btnh", (None, 2, 8), "key", 2)
        self._value_dense = projection("btd,dnh->btnh", (None, 2, 8), "value", 3)
        self._softmax = keras.layers.Softmax(axis=-1, name="attention_softmax")
        self._output_dense = keras.layers.EinsumDense("btnh,nhd->btd", (None, shape[-1]))
        self._output_dense.build((None, None, 4, 8))

    def call(self, x, padding_mask=None):
        q, k, v = self._query_dense(x), self._key_dense(x), self._value_dense(x)
        mask = None
        if padding_mask is not None:  # (B, 1, T, S): the keys each query may attend to
            mask = keras.ops.cast(padding_mask, "bool")[:, None, None, :]
            mask = keras.ops.logical_and(mask, keras.ops.ones((1, 1, x.shape[1], 1), "bool"))
        if self.fused:
            out = keras.ops.dot_product_attention(q, k, v, mask=mask, is_causal=self.causal)
        else:
            k, v = keras.ops.repeat(k, 2, axis=2), keras.ops.repeat(v, 2, axis=2)
            scores = keras.ops.einsum("btnh,bsnh->bnts", q, k) / 8**0.5
            out = keras.ops.einsum("bnts,bsnh->btnh", self._softmax(scores, mask), v)
        return self._output_dense(out)


def _hub_style_model(**kwargs):
    tokens = keras.Input((10,), dtype="int32")
    padding = keras.Input((10,), dtype="int32")
    unit = keras.initializers.RandomNormal(stddev=1.0, seed=0)
    h = keras.layers.Embedding(30, 16, embeddings_initializer=unit, name="embed")(tokens)
    h = _HubStyle(name="attention", **kwargs)(h, padding_mask=padding)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model([tokens, padding], outputs)


def _hub_style_reference(model, x, causal):
    layer = model.get_layer("attention")
    e = model.get_layer("embed")(x[0])
    q = _numpy(layer._query_dense(e)).astype(np.float64)
    k = np.repeat(_numpy(layer._key_dense(e)).astype(np.float64), 2, axis=2)
    allowed = np.broadcast_to((x[1] != 0)[:, None, :], (len(x[0]), 10, 10))
    if causal:
        allowed = allowed & np.tril(np.ones((10, 10), bool))
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(8)
    p = _softmax(logits, allowed[:, None])
    n = allowed.sum(-1)[:, None]  # (B, 1, T): keys each query row attends to
    h = -(p * np.log(np.maximum(p, 1e-30))).sum(-1) / np.log(np.maximum(n, 2))
    rows = np.broadcast_to(n >= 2, h.shape)
    return np.array([h[:, i][rows[:, i]].mean() for i in range(4)])


@pytest.mark.parametrize(
    "fused, causal",
    [(False, False), (True, False), (True, True)],
    ids=["softmax", "fused", "causal"],
)
def test_an_attention_layer_returning_no_weights_is_measured_from_its_softmax(fused, causal):
    model = _hub_style_model(fused=fused, causal=causal)
    tokens = np.random.default_rng(0).integers(1, 30, (8, 10))
    padding = np.ones_like(tokens)
    padding[:3, 6:] = 0
    x = [tokens, padding]
    result, out = _probed_output(model, x)
    values = result.metrics["attention"]
    entropy = _hub_style_reference(model, x, causal)
    np.testing.assert_allclose(values["attention_entropy_by_head"], entropy, atol=1e-4)
    assert values["attention_entropy"] < 0.8  # peaked heads (stddev 1): not a uniform default
    # the layer's own computation gives the output: bit-identical to an unprobed call
    np.testing.assert_array_equal(out, _numpy(model(x, training=False)))
    report = keras_initkit.diagnose(model, x)
    sites = {s.layer.name: s for s in probe.make_sites(model, probe.all_layers(model))}
    assert sites["attention"].kind == "attention"
    assert sites["query"].role == sites["key"].role == "attention_scores"
    assert sites["value"].role is None
    assert sites["attention_softmax"].role == "attention_weights"
    assert report.metrics["attention"]["attention_entropy"] == pytest.approx(
        entropy.min(), abs=1e-4
    )


def test_a_layer_with_a_softmax_and_no_query_is_no_attention_layer():
    class Classifier(keras.layers.Layer):
        def build(self, shape):
            self.logits = keras.layers.Dense(3, name="logits")
            self.probabilities = keras.layers.Softmax()

        def call(self, x):
            return self.probabilities(self.logits(x))

    layer = Classifier()
    layer(np.ones((2, 4), "float32"))
    assert not probe.attention.is_attention(layer)
    assert not probe.attention.is_attention(keras.layers.Softmax())


class _OneHead(keras.layers.Layer):
    """A single-head attention layer returning no weights: `(batch, queries, keys)`
    scores and a `(batch, queries, keys)` mask into its `Softmax` layer."""

    def build(self, shape):
        init = keras.initializers.RandomNormal(stddev=1.0, seed=4)
        self.query_dense = keras.layers.Dense(8, kernel_initializer=init, name="query")
        self.key_dense = keras.layers.Dense(8, kernel_initializer="orthogonal", name="key")
        self.softmax = keras.layers.Softmax()
        self.query_dense.build(shape)
        self.key_dense.build(shape)

    def call(self, x, padding_mask):
        q, k = self.query_dense(x), self.key_dense(x)
        mask = keras.ops.cast(padding_mask, "bool")[:, None, :]
        mask = keras.ops.logical_and(mask, keras.ops.ones((1, x.shape[1], 1), "bool"))
        p = self.softmax(keras.ops.einsum("btd,bsd->bts", q, k), mask)
        return keras.ops.einsum("bts,bsd->btd", p, x)


def test_a_single_head_layer_returning_no_weights_with_a_mask_of_its_rank():
    tokens = keras.Input((10,), dtype="int32")
    padding = keras.Input((10,), dtype="int32")
    unit = keras.initializers.RandomNormal(stddev=1.0, seed=0)
    h = keras.layers.Embedding(30, 16, embeddings_initializer=unit, name="embed")(tokens)
    h = _OneHead(name="attention")(h, padding_mask=padding)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model([tokens, padding], outputs)
    x = [np.random.default_rng(0).integers(1, 30, (8, 10)), np.ones((8, 10), "int32")]
    x[1][:3, 6:] = 0
    result, out = _probed_output(model, x)
    layer, e = model.get_layer("attention"), model.get_layer("embed")(x[0])
    q, k = _numpy(layer.query_dense(e)), _numpy(layer.key_dense(e))
    allowed = np.broadcast_to((x[1] != 0)[:, None, :], (8, 10, 10))
    p = _softmax(np.einsum("btd,bsd->bts", q, k), allowed)
    h = -(p * np.log(np.maximum(p, 1e-30))).sum(-1) / np.log(allowed.sum(-1))
    values = result.metrics["attention"]
    assert values["attention_entropy_by_head"].shape == (1,)
    assert values["attention_entropy"] == pytest.approx(h.mean(), abs=1e-4)
    np.testing.assert_array_equal(out, _numpy(model(x, training=False)))

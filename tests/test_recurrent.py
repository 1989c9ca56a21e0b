"""Recurrent layers: gate saturation and spectral radius, against a NumPy recurrence."""

import keras
import numpy as np
import pytest

import keras_initkit as ik
from keras_initkit import probe

pytestmark = pytest.mark.backend_agnostic
DELTA = 0.1  # a wide margin, so that the shares are neither 0 nor 1


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _saturated(values, low, high):
    margin = DELTA * (high - low)
    return (values <= low + margin) | (values >= high - margin)


def _reference(layer, x, mask):
    """Per gate, the share of saturated values over valid steps, by stepping the cell."""
    cell = layer.cell
    w, u = (
        keras.ops.convert_to_numpy(v).astype(np.float64)
        for v in (cell.kernel, cell.recurrent_kernel)
    )
    b = keras.ops.convert_to_numpy(cell.bias).astype(np.float64)
    units = u.shape[0]
    h, c = np.zeros((x.shape[0], units)), np.zeros((x.shape[0], units))
    steps = range(x.shape[1])[::-1] if layer.go_backwards else range(x.shape[1])
    hits, count = None, 0
    for t in steps:
        valid = mask[:, t]
        if isinstance(cell, keras.layers.LSTMCell):
            z = x[:, t] @ w + h @ u + b
            zi, zf, zc, zo = np.split(z, 4, axis=1)
            gates = [_sigmoid(zi), _sigmoid(zf), np.tanh(zc), _sigmoid(zo)]
            bounds = [(0, 1), (0, 1), (-1, 1), (0, 1)]
            c_new = gates[1] * c + gates[0] * gates[2]
            h_new = gates[3] * np.tanh(c_new)
            c = np.where(valid[:, None], c_new, c)
        else:  # GRU, reset_after=True
            xz, xr, xh = np.split(x[:, t] @ w + b[0], 3, axis=1)
            hz, hr, hh = np.split(h @ u + b[1], 3, axis=1)
            z, r = _sigmoid(xz + hz), _sigmoid(xr + hr)
            cand = np.tanh(xh + r * hh)
            gates, bounds = [z, r, cand], [(0, 1), (0, 1), (-1, 1)]
            h_new = z * h + (1 - z) * cand
        share = np.array([_saturated(g, lo, hi).mean(axis=1) for g, (lo, hi) in zip(gates, bounds)])
        hits = share[:, valid].sum(axis=1) if hits is None else hits + share[:, valid].sum(axis=1)
        count += valid.sum()
        h = np.where(valid[:, None], h_new, h)
    return hits / count, h


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.LSTM(
            6, kernel_initializer=keras.initializers.RandomNormal(stddev=1.5, seed=1)
        ),
        lambda: keras.layers.LSTM(6, go_backwards=True, return_sequences=True),
        lambda: keras.layers.GRU(
            6, kernel_initializer=keras.initializers.RandomNormal(stddev=1.5, seed=2)
        ),
    ],
)
def test_gate_saturation_matches_a_numpy_recurrence_with_masked_steps_excluded(make):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7,), dtype="int32")
    big = keras.initializers.RandomNormal(stddev=1.5, seed=3)
    embedded = keras.layers.Embedding(
        20, 5, mask_zero=True, embeddings_initializer=big, name="embed"
    )(inputs)
    layer = make()
    model = keras.Model(inputs, layer(embedded))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, (16, 7))
    tokens[:5, 4:] = 0  # padded tails
    result = probe.Probe(model, [probe.RecurrentGates(delta=DELTA)]).run(tokens)
    values = result.metrics[layer.name]
    x = keras.ops.convert_to_numpy(model.get_layer("embed")(tokens)).astype(np.float64)
    expected, h = _reference(layer, x, tokens != 0)
    np.testing.assert_allclose(values["gate_saturated_by_gate"], expected, atol=2e-3)
    assert values["gate_saturated_fraction"] == pytest.approx(expected.max(), abs=2e-3)
    assert 0 < values["gate_saturated_fraction"] < 1


def test_irnn_has_spectral_radius_exactly_one_and_orthogonal_lstm_blocks_are_below():
    inputs = keras.Input((5, 3))
    irnn = keras.layers.SimpleRNN(
        8, activation="relu", recurrent_initializer=ik.initializers.Identity(), name="irnn"
    )
    chaotic = keras.layers.SimpleRNN(
        8,
        recurrent_initializer=keras.initializers.RandomNormal(stddev=3.0 / np.sqrt(8), seed=0),
        name="chaotic",
    )
    model = keras.Model(inputs, [irnn(inputs), chaotic(inputs)])
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype("float32")
    metrics = probe.Probe(model, [probe.RecurrentGates()]).run(x).metrics
    assert metrics["irnn"]["recurrent_spectral_radius"] == pytest.approx(1.0, abs=1e-6)
    assert "gate_saturated_fraction" not in metrics["irnn"]  # ReLU state: not a bounded gate
    kernel = keras.ops.convert_to_numpy(chaotic.cell.recurrent_kernel)
    expected = np.max(np.abs(np.linalg.eigvals(kernel.astype(np.float64))))
    assert metrics["chaotic"]["recurrent_spectral_radius"] == pytest.approx(expected, rel=1e-9)
    assert metrics["chaotic"]["recurrent_spectral_radius"] > 1.5


def _text_model():
    inputs = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(50, 16, mask_zero=True)(inputs)
    lstm = keras.layers.LSTM(8, return_sequences=True, dropout=0.2, name="lstm")
    h = keras.layers.Bidirectional(lstm)(h)
    h = keras.layers.GRU(8, recurrent_dropout=0.1, name="gru")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(1, 50, (32, 12))
    x[:, 9:] = 0
    return model, x, rng.integers(0, 3, (32,))


def test_text_model_through_every_feature_changes_nothing_and_reports_recurrent_layers():
    model, x, y = _text_model()
    state = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    result = probe.Probe(model, [probe.RecurrentGates(), probe.ActivationMoments()]).run(x)
    assert {"forward_lstm", "backward_lstm", "gru"} <= set(result.metrics)
    again = probe.Probe(model, [probe.RecurrentGates()]).run(x)  # dropout off: deterministic
    assert (
        again.metrics["gru"]["gate_saturated_fraction"]
        == result.metrics["gru"]["gate_saturated_fraction"]
    )
    for old, v in zip(state, model.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), old)
    grads = probe.gradients.layer_gradients(model, (x, y))
    assert {"forward_lstm", "backward_lstm", "gru", "head"} <= set(grads.metrics)
    report = ik.lsuv_init(model, x, verbose=0)
    skipped = {r.name: r.skipped for r in report.layers if r.skipped}
    assert set(skipped) == {"forward_lstm", "backward_lstm", "gru"}
    assert all("recurrent" in why for why in skipped.values())
    assert report["head"].converged
    # The long reason is printed once, under the table, not as a 170-character cell.
    text = str(report)
    assert text.count("recurrent layer") == 1 and text.count("skipped [1]") == 3
    gru_row = next(line for line in text.splitlines() if line.startswith("gru "))
    assert gru_row.split() == ["gru", "-", "-", "-", "-", "skipped", "[1]"]  # was nan nan 0 1
    targets = len(report.layers) - 3
    assert text.startswith(f"LSUV: {targets} layer(s) (and 3 recurrent, listed), "), text
    assert max(len(line) for line in text.splitlines()[1:]) <= 90, text  # below the title
    # Layers named: those, and no recurrent layer listed besides.
    named = ik.lsuv_init(model, x, layers=["head"], verbose=0)
    assert [r.name for r in named.layers] == ["head"]
    assert str(named).startswith("LSUV: 1 layer(s), ")


def test_a_bidirectional_run_as_one_fused_call_is_still_measured(monkeypatch):
    """On a GPU, Keras runs a Bidirectional LSTM as one fused cuDNN call that never
    calls its two directions: `diagnose` on an H200 (JAX and torch) had no row for
    either. Here a fused call that bypasses both layers' `call` stands in for cuDNN."""
    fused_calls = []

    def fused(self, sequences, initial_state=None):
        fused_calls.append(self.name)
        forward = keras.layers.LSTM.call(self.forward_layer, sequences)
        backward = keras.layers.LSTM.call(self.backward_layer, sequences)
        return keras.ops.concatenate([forward, backward], axis=-1)

    monkeypatch.setattr(keras.layers.Bidirectional, "_call_fused_lstm", fused)
    inputs = keras.Input((12, 8))
    bi = keras.layers.Bidirectional(keras.layers.LSTM(8), name="bi")
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(bi(inputs)))
    x = np.random.default_rng(0).standard_normal((16, 12, 8)).astype("float32")
    model.predict(x, verbose=0)
    assert fused_calls, "the stand-in for cuDNN is not what Keras runs"
    directions = {bi.forward_layer.name, bi.backward_layer.name}
    report = ik.diagnose(model, x)
    assert directions <= set(report.metrics), str(report)
    assert "gate_saturated_fraction" in report.metrics[bi.forward_layer.name]
    model.compile("sgd", "sparse_categorical_crossentropy")
    y = np.arange(16) % 3
    grads = ik.diagnose(model, x, y)
    assert directions <= set(grads.metrics), str(grads)
    lsuv = ik.lsuv_init(model, x, verbose=0)
    assert {r.name for r in lsuv.layers if r.skipped} == directions


def test_layers_naming_a_wrapper_select_the_layers_it_runs():
    """`layers=["td", "bi"]` (TimeDistributed, Bidirectional) watched nothing: diagnose
    said "healthy" on an empty table, lsuv_init found no kernel. They select what the
    wrappers run, as `layers=None` does."""
    inputs = keras.Input((12, 8))
    h = keras.layers.TimeDistributed(keras.layers.Dense(16, activation="relu"), name="td")(inputs)
    h = keras.layers.Bidirectional(keras.layers.LSTM(8), name="bi")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    x = np.random.default_rng(0).standard_normal((16, 12, 8)).astype("float32")
    inner = model.get_layer("td").layer.name
    bi = model.get_layer("bi")
    report = ik.diagnose(model, x, layers=["td", "bi"])
    expected = {inner, bi.forward_layer.name, bi.backward_layer.name}
    assert set(report.metrics) == expected, str(report)
    assert "relu" in str(report) and "gates" in str(report)
    lsuv = ik.lsuv_init(model, x, layers=[model.get_layer("td")], verbose=0)
    assert [r.name for r in lsuv.layers if not r.skipped] == [inner] and lsuv.converged

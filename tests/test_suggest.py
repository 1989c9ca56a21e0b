"""`suggest_initializer`: candidates tried on a copy, ranked by a documented score."""

import dataclasses
import json
import random

import keras
import numpy as np
import pytest

import keras_initkit as ik
from keras_initkit import suggest_initializer

agnostic = pytest.mark.backend_agnostic


def _mlp(depth=3, width=8, activation="relu", kernel_initializer="glorot_uniform", inputs=6):
    model = keras.Sequential([keras.Input((inputs,))])
    for i in range(depth):
        model.add(
            keras.layers.Dense(
                width, activation=activation, kernel_initializer=kernel_initializer, name=f"h{i}"
            )
        )
    model.add(keras.layers.Dense(3, activation="softmax", name="head"))
    return model


def _data(n=64, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)).astype("float32"), rng.integers(0, 3, n)


def _compiled(**kwargs):
    model = _mlp(**kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


# -- arguments ----------------------------------------------------------------------

BAD = [
    ({"model": "not a model"}, r"`model` must be a `keras.Model`"),
    ({"candidates": []}, r"`candidates` must be a non-empty list"),
    ({"candidates": "he_normal"}, r"`candidates` must be a non-empty list"),
    ({"candidates": ["no_such_init"]}, r"unknown initializer.*Received: 'no_such_init'"),
    ({"candidates": [3]}, r"`candidates` must hold.*Received: 3 of type int"),
    ({"candidates": ["he_normal", "he_normal"]}, r"unique.*\['he_normal'\]"),
    ({"candidates": {"": "he_normal"}}, r"non-empty strings"),
    ({"steps": -1}, r"`steps` must be a positive int.*Received: steps=-1"),
    ({"steps": 1.5}, r"`steps` must be a positive int"),
    ({"steps": True}, r"`steps` must be a positive int"),
    ({"apply": "yes"}, r"`apply` must be a bool"),
    ({"batch_size": 0}, r"`batch_size` must be a positive int"),
    ({"seed": -1}, r"`seed` must be an int >= 0"),
    ({"seed": "0"}, r"`seed` must be an int >= 0"),
    ({"verbose": 2}, r"`verbose` must be 0, 1 or \"auto\""),
    ({"verbose": "loud"}, r"`verbose` must be 0, 1 or \"auto\". Received: verbose='loud'"),
    ({"layers": ["nope"]}, r"`layers` must name layers.*Received: 'nope'"),
    ({"layers": "h0"}, r"`layers` must be a list"),
    ({"layers": []}, r"`layers` must name at least one layer.*Received: layers=\[\]"),
    ({"y": None, "steps": 2}, r"`steps` > 0 .* needs targets"),
    ({"y": np.zeros(5)}, r"same number of samples"),
    ({"x": [[0.0] * 6] * 8}, r"`x` must be an array or tensor.*Received: x of type list"),
    ({"y": [0, 1]}, r"`y` must be an array or tensor"),
    ({"x": (_data()[0], _data()[1]), "y": None}, r"pass the targets as `y=`.*tuple of 2"),
    ({"x": np.zeros((64, 5), "float32")}, r"Argument `x`.*\(None, 6\)"),
    ({"x": [np.zeros((64, 6), "float32")] * 2}, r"one array per model input \(1\)"),
]


@agnostic
@pytest.mark.parametrize("kwargs, match", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_arguments_are_clear_errors(kwargs, match):
    x, y = _data()
    arguments = {"model": _compiled(), "x": x, "y": y, **kwargs}
    with pytest.raises(ValueError, match=match):
        suggest_initializer(arguments.pop("model"), arguments.pop("x"), **arguments)


@agnostic
def test_targets_without_a_loss_or_steps_without_an_optimizer_are_errors():
    x, y = _data()
    with pytest.raises(ValueError, match=r"need a loss.*loss=None for an uncompiled model"):
        suggest_initializer(_mlp(), x, y)
    with pytest.raises(ValueError, match=r"`steps` > 0 trains a copy.*no optimizer"):
        suggest_initializer(_mlp(), x, y, loss="sparse_categorical_crossentropy", steps=2)


@agnostic
def test_unbuilt_and_subclassed_models_are_clear_errors():
    x, _ = _data()
    with pytest.raises(ValueError, match=r"must be built"):
        suggest_initializer(keras.Sequential([keras.layers.Dense(2)]), x)

    class Net(keras.Model):  # no get_config/from_config for its own argument
        def __init__(self, units):
            super().__init__()
            self.dense = keras.layers.Dense(units)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net(4)
    net(x[:2])
    with pytest.raises(ValueError, match=r"clone_model.*subclassed model needs `get_config`"):
        suggest_initializer(net, x)


# -- what it returns ------------------------------------------------------------------


@agnostic
def test_report_ranks_candidates_and_serializes():
    x, y = _data()
    model = _compiled(depth=3)
    report = suggest_initializer(model, x, y, verbose=0)
    assert isinstance(report, ik.SuggestionReport)
    assert report.names[0] == report.best.name
    scores = [c.score for c in report.candidates]
    assert scores == sorted(scores)
    assert set(report.names) == {
        "current",
        "he_normal",
        "lecun_normal",
        "orthogonal",
        "lsuv",
        "identity",
    }
    assert report.skipped == (("delta_orthogonal", "no convolution in the model"),)
    for c in report.candidates:  # every term of the score is there, finite on this net
        terms = [c.activation_drift, abs(np.log10(c.gradient_ratio))]
        terms += [abs(np.log10(c.sensitivity)), c.sensitivity_spread]
        terms += [c.dead_fraction or 0.0, c.saturated_fraction or 0.0]
        assert c.score == pytest.approx(sum(terms), rel=1e-6)
        assert c.loss is not None and c.loss_after is None
    current = report["current"]
    assert current.description == "current (GlorotUniform)"
    # identity applies to the square kernels only; the others keep their initializer
    identity = report["identity"]
    assert identity.layers == ("h1", "h2")
    assert identity.fallback_layers == ("h0", "head")
    assert identity.initializers["h1"]["class_name"] == "Identity"
    assert identity.initializers["head"]["class_name"] == "GlorotUniform"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["best"] == report.best.name
    assert [c["name"] for c in data["candidates"]] == report.names
    text = str(report)
    assert text.startswith(f"Suggested initializer: {report.best.name}")
    assert "sensitivity" in text and "lecun_normal" in text
    assert report.to_markdown().count("\n|") == len(report.candidates) + 2  # header, rule
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.steps = 3
    with pytest.raises(KeyError, match="No candidate named 'glorot'"):
        report["glorot"]


@agnostic
def test_user_candidates_names_and_instances():
    x, y = _data()
    report = suggest_initializer(
        _compiled(),
        x,
        y,
        candidates={
            "wide": keras.initializers.RandomNormal(stddev=3.0),
            "normalized": "keras_initkit>Normalized",
            "glorot_normal": "glorot_normal",
            "he": "he_normal",
        },
        verbose=0,
    )
    assert set(report.names) == {"wide", "normalized", "glorot_normal", "he"}
    assert report["wide"].description == "RandomNormal"
    assert report["he"].description == "HeNormal"  # the built-in candidate, renamed
    # every layer gets its own seed (an int seed would repeat the values)
    seeds = {report["wide"].initializers[n]["config"]["seed"] for n in ("h0", "h1", "h2")}
    assert len(seeds) == 3
    assert report.best.name != "wide"  # std 3 weights: exploding, saturated softmax


def _nested_same_names():
    """Two nested blocks whose kernel layers share the name `d`."""

    def block(name):
        inp = keras.Input((6,))
        return keras.Model(inp, keras.layers.Dense(6, activation="tanh", name="d")(inp), name=name)

    inp = keras.Input((6,))
    out = keras.layers.Dense(3, activation="softmax", name="head")(block("b2")(block("b1")(inp)))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@agnostic
def test_layers_that_share_a_name_are_reported_apart():
    x, y = _data()
    report = suggest_initializer(_nested_same_names(), x, y, candidates=["he_normal"], verbose=0)
    assert set(report["he_normal"].initializers) == {"b1/d", "b2/d", "head"}
    only = suggest_initializer(
        _nested_same_names(), x, y, candidates=["he_normal"], layers=["b2/d"], verbose=0
    )
    assert set(only["he_normal"].initializers) == {"b2/d"}
    with pytest.raises(ValueError, match=r"2 layers of the model that have a kernel are named 'd'"):
        suggest_initializer(_nested_same_names(), x, y, layers=["d"], verbose=0)


@agnostic
def test_recurrent_models_get_every_default_candidate_ranked():
    """The LSUV candidate handed the recurrent cells to `lsuv_init`, which refuses
    them by name: every model with an LSTM, GRU or SimpleRNN raised "Argument `layers`
    names a layer that is not part of the model", an argument the user never passed."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5, 4)).astype("float32")
    y = rng.integers(0, 3, 16)
    for recurrent in (keras.layers.LSTM(6), keras.layers.SimpleRNN(6)):
        model = keras.Sequential(
            [keras.Input((5, 4)), recurrent, keras.layers.Dense(3, activation="softmax")]
        )
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        report = suggest_initializer(model, x, y, verbose=0)
        assert "lsuv" in {c.name for c in report.candidates}
        assert report["lsuv"].disqualified is None, report


def _recurrent_stack():
    """The user trial's model: LSTM -> GRU -> Dense softmax on float sequences."""
    model = keras.Sequential(
        [
            keras.Input((12, 8)),
            keras.layers.LSTM(16, return_sequences=True),
            keras.layers.GRU(16),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _seq2seq():
    """Embedding(mask_zero) -> LSTM -> Attention -> GRU -> Dense softmax on token ids."""
    inputs = keras.Input((12,), dtype="int32")
    h = keras.layers.LSTM(16, return_sequences=True)(
        keras.layers.Embedding(50, 8, mask_zero=True)(inputs)
    )
    h = keras.layers.GRU(16)(keras.layers.Attention()([h, h]))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _score_terms(c):
    terms = [c.activation_drift or 0.0, abs(np.log10(c.gradient_ratio))]
    if c.sensitivity is not None:
        terms += [abs(np.log10(c.sensitivity)), c.sensitivity_spread]
    return terms + [c.dead_fraction or 0.0, c.saturated_fraction or 0.0]


@agnostic
def test_recurrent_layers_count_in_drift_and_gradient_ratio():
    """The targets of a recurrent layer are its cell's kernels, but the probe watches the
    LSTM/GRU layer itself: drift and gradient ratio were taken over the Dense head alone,
    `drift 0.00` and `grad ratio -` for every candidate (while `diagnose` reported a
    first/last ratio), and the ranking came from the sensitivity only."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 12, 8)).astype("float32")
    y = np.arange(64) % 5
    model = _recurrent_stack()
    report = suggest_initializer(model, x, y, apply=True, verbose=0)
    for c in report.candidates:
        assert c.disqualified is None, report
        assert c.gradient_ratio is not None and c.gradient_ratio > 0, report
        assert c.activation_drift is not None, report
        assert c.score == pytest.approx(sum(_score_terms(c)), rel=1e-6)
    assert max(c.activation_drift for c in report.candidates) > 0.01, report
    assert len({round(c.score, 6) for c in report.candidates}) == len(report.candidates)
    assert not any("not measured" in note for note in report.notes), report.notes
    # the same ratio as `diagnose` on the model re-initialized with the winner: the LSTM's
    # gradient (over its own weights) over the Dense head's
    health = ik.diagnose(model, x, y)
    assert health.gradient_ratio == pytest.approx(report.best.gradient_ratio, rel=1e-3)


@agnostic
def test_bidirectional_and_stacked_cells_count_as_their_recurrent_layer():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 6, 4)).astype("float32")
    y = rng.integers(0, 3, 32)
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True)),
            keras.layers.RNN([keras.layers.SimpleRNNCell(6), keras.layers.GRUCell(6)]),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    report = suggest_initializer(model, x, y, candidates=["he_normal", "orthogonal"], verbose=0)
    for c in report.candidates:
        assert c.gradient_ratio is not None and c.activation_drift is not None, report


@agnostic
def test_seq2seq_candidates_are_told_apart_and_what_is_not_measured_is_said():
    """On token ids the sensitivity cannot be measured, and with the recurrent layers
    left out of drift and gradient ratio every score was 0.000: `current` won a complete
    tie, and `lsuv` tied `orthogonal` although its loss was far higher."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 50, (64, 12))
    x[:, 9:] = 0  # padding, masked
    y = np.arange(64) % 5
    report = suggest_initializer(_seq2seq(), x, y, verbose=0)
    for c in report.candidates:
        assert c.disqualified is None, report
        assert c.gradient_ratio is not None and c.activation_drift is not None, report
        assert c.sensitivity is None and c.score == pytest.approx(sum(_score_terms(c)), rel=1e-6)
    assert len({round(c.score, 6) for c in report.candidates}) == len(report.candidates), report
    assert report["lsuv"].score > report["orthogonal"].score
    assert any(n.startswith("sensitivity and spread not measured") for n in report.notes)
    assert "note: sensitivity and spread not measured: the input is not floating-point" in str(
        report
    )
    assert report.to_dict()["notes"] == list(report.notes)


@agnostic
def test_ties_go_to_the_lower_loss_and_are_reported():
    """Re-initializing the head alone: no hidden kernel layer to compare (drift), one
    kernel layer (no gradient ratio), the sensitivity and the hidden layers do not see the
    head: every score is equal. The loss at initialization was measured but ignored, and
    the tie kept the candidates' order silently, showing a drift of 0.00."""
    x, y = _data()
    candidates = {
        "wide": keras.initializers.RandomNormal(stddev=3.0),
        "narrow": keras.initializers.RandomNormal(stddev=0.01),
    }
    report = suggest_initializer(
        _compiled(), x, y, candidates=candidates, layers=["head"], verbose=0
    )
    wide, narrow = report["wide"], report["narrow"]
    assert wide.score == narrow.score and narrow.loss < wide.loss
    assert report.names == ["narrow", "wide"]
    assert wide.activation_drift is None and wide.gradient_ratio is None
    assert any(n.startswith("drift not measured") for n in report.notes), report.notes
    assert any(n.startswith("grad ratio not measured: fewer than two") for n in report.notes)
    assert any(
        n.startswith("narrow, wide tie at score") and "loss at initialization" in n
        for n in report.notes
    ), report.notes
    assert "drift" in str(report) and "0.00" not in str(report).splitlines()[2]
    # without targets nothing tells them apart: said, and the candidates' order kept
    blind = suggest_initializer(_mlp(), x, candidates=candidates, layers=["head"], verbose=0)
    assert blind.names == ["wide", "narrow"]
    assert any("nothing measured tells them apart" in n for n in blind.notes), blind.notes
    assert any(n.startswith("grad ratio not measured: no targets") for n in blind.notes)


@agnostic
def test_delta_orthogonal_is_tried_on_convolutions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 6, 4)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="c0"),
            keras.layers.Conv2D(8, 3, padding="same", activation="tanh", name="c1"),
            keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="head"),
        ]
    )
    report = suggest_initializer(
        model, x, candidates=["delta_orthogonal", "identity", "he_normal"], verbose=0
    )
    delta = report["delta_orthogonal"]
    assert delta.layers == ("c0", "c1")  # c2 has in=8 > out=4; head is dense
    assert delta.fallback_layers == ("c2", "head")
    assert report["identity"].layers == ("c0",)  # the only square kernel
    assert report["he_normal"].gradient_ratio is None  # no targets: no gradient term


def _matrix(kernel, input_axes):
    """An EinsumDense kernel as its `(fan_in, fan_out)` matrix."""
    k = keras.ops.convert_to_numpy(kernel)
    rest = [i for i in range(k.ndim) if i not in input_axes]
    fan_in = int(np.prod([k.shape[i] for i in input_axes]))
    return np.transpose(k, [*input_axes, *rest]).reshape(fan_in, -1)


@agnostic
@pytest.mark.parametrize(
    "equation, shape, input_axes",
    [("btd,dnh->btnh", (64, 4, 16), (0,)), ("btnh,nhd->btd", (4, 16, 64), (0, 1))],
    ids=["query", "output"],
)
def test_attention_kernels_are_drawn_on_their_matrix(equation, shape, input_axes):
    # Keras' initializers read a rank-3 kernel as a convolution's: He at half its std,
    # an "orthogonal" kernel that is no orthogonal map, identity reading one feature
    from keras_initkit import suggest

    layer = keras.layers.EinsumDense(equation, (None, *shape[len(input_axes) :]))
    layer.build((None, 8, *shape[: len(input_axes)]))
    assert tuple(layer.kernel.shape) == shape
    draws = {}
    for name in ("orthogonal", "he_normal", "identity"):
        initializer = suggest._as_matrix(suggest._builtin(name).make(layer, shape, 3), layer, shape)
        draws[name] = _matrix(initializer(shape), input_axes)
        restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
        np.testing.assert_array_equal(_matrix(restored(shape), input_axes), draws[name])
    np.testing.assert_allclose(draws["orthogonal"].T @ draws["orthogonal"], np.eye(64), atol=1e-5)
    np.testing.assert_array_equal(draws["identity"], np.eye(64))
    assert draws["he_normal"].std() == pytest.approx(np.sqrt(2 / 64), rel=0.1)
    assert suggest._builtin("delta_orthogonal").make(layer, shape, 3) is None


@agnostic
def test_attention_and_grouped_convolutions_get_no_convolution_candidate():
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 16))
    h = keras.layers.MultiHeadAttention(4, 4, name="mha")(inputs, inputs)
    h = keras.layers.Conv1D(16, 3, padding="same", groups=4, name="grouped")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    x = rng.standard_normal((16, 6, 16)).astype("float32")
    report = suggest_initializer(model, x, candidates=["identity", "delta_orthogonal"], verbose=0)
    assert report.skipped == (("delta_orthogonal", "no convolution in the model"),)
    identity = report["identity"]
    assert "grouped" in identity.fallback_layers and "head" in identity.fallback_layers
    assert {"query", "key", "value", "attention_output"} <= set(identity.layers)


@agnostic
def test_an_applied_lsuv_candidate_still_marks_attention_projections_for_lsuv_init():
    inputs = keras.Input((6, 16))
    h = keras.layers.MultiHeadAttention(4, 4, name="mha")(inputs, inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    x = np.random.default_rng(0).standard_normal((16, 6, 16)).astype("float32")
    suggest_initializer(model, x, candidates=["lsuv"], apply=True, verbose=0)
    query = model.get_layer("mha")._query_dense
    assert type(query.kernel_initializer).__name__ == "_EinsumMatrix"  # LSUV, drawn as a matrix
    calibrated = {r.name for r in ik.lsuv_init(model, x, verbose=0).layers}
    assert {"query", "key", "value", "attention_output", "head"} <= calibrated


@agnostic
def test_sensitivity_is_not_measured_where_rounding_swamps_its_step():
    x, y = _data()
    report = suggest_initializer(_compiled(), x[:1], y[:1], candidates=["he_normal"], verbose=0)
    assert any("fewer than two samples" in note for note in report.notes), report.notes
    assert report["he_normal"].sensitivity is None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _compiled()
    finally:
        keras.config.set_dtype_policy(previous)
    report = suggest_initializer(model, x, y, candidates=["he_normal", "orthogonal"], verbose=0)
    assert any("computes in bfloat16" in note for note in report.notes), report.notes
    assert all(c.sensitivity is None for c in report.candidates)


@agnostic
def test_steps_rank_by_the_loss_after_training():
    x, y = _data()
    report = suggest_initializer(
        _compiled(), x, y, candidates=["he_normal", "orthogonal"], steps=3, batch_size=16
    )
    assert report.steps == 3
    for c in report.candidates:
        assert c.loss_after is not None and c.score == c.loss_after
    assert report.candidates[0].loss_after <= report.candidates[1].loss_after
    assert "loss@3" in str(report)


@agnostic
def test_deterministic_for_a_seed():
    x, y = _data()
    model = _compiled()
    first = suggest_initializer(model, x, y, candidates=["current", "he_normal"], verbose=0)
    second = suggest_initializer(model, x, y, candidates=["current", "he_normal"], verbose=0)
    assert first.to_dict() == second.to_dict()
    other = suggest_initializer(model, x, y, candidates=["he_normal"], seed=7, verbose=0)
    assert other["he_normal"].score != first["he_normal"].score


@agnostic
def test_progress_bar(capsys):
    x, _ = _data()
    suggest_initializer(_mlp(), x, candidates=["he_normal", "orthogonal"], verbose=1)
    assert "2/2" in capsys.readouterr().out
    suggest_initializer(_mlp(), x, candidates=["he_normal", "orthogonal"], verbose=0)
    assert capsys.readouterr().out == ""


# -- what it must not touch ---------------------------------------------------------------


def _draws():
    return (
        random.random(),
        np.random.rand(),  # noqa: NPY002 (the legacy global state is what is checked)
        float(keras.ops.convert_to_numpy(keras.random.normal((1,)))[0]),
    )


@agnostic
def test_user_model_optimizer_and_random_state_untouched():
    x, y = _data()
    model = _compiled()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # optimizer variables exist
    weights = _numpy(model.variables)
    optimizer = _numpy(model.optimizer.variables)
    configs = [layer.get_config() for layer in model.layers]

    keras.utils.set_random_seed(5)
    expected = _draws()
    keras.utils.set_random_seed(5)
    report = suggest_initializer(model, x, y, steps=2, verbose=0)
    assert _draws() == expected  # Python, NumPy and Keras' global generators
    assert report.best is not None and not report.applied
    for before, after in zip(weights, _numpy(model.variables)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(optimizer, _numpy(model.optimizer.variables)):
        np.testing.assert_array_equal(before, after)
    assert [layer.get_config() for layer in model.layers] == configs


# -- zero initialization ----------------------------------------------------------------


@agnostic
def test_zero_initialized_hidden_layers_are_never_suggested_and_diagnose_flags_them():
    x, y = _data()
    model = _compiled(kernel_initializer="zeros")
    report = suggest_initializer(
        model,
        x,
        y,
        candidates={
            "current": "current",
            "zeros": "zeros",
            "he_normal": "he_normal",
            "constant": keras.initializers.Constant(0.5),
        },
        verbose=0,
    )
    assert report.best.name == "he_normal"
    for name in ("current", "zeros", "constant"):
        assert report[name].disqualified.startswith("symmetric units in h0")
        assert report[name].score == float("inf")
    assert report.names[-3:] == ["current", "zeros", "constant"]

    health = ik.diagnose(model, x, y)
    for layer in ("h0", "h1", "h2"):
        assert health.metrics[layer]["symmetric_fraction"] == 1.0
    flagged = {f.layer for f in health.findings if "symmetric" in str(getattr(f, "kind", "") or f)}
    assert {"h0", "h1", "h2"} <= flagged

    only_zeros = suggest_initializer(model, x, y, candidates=["zeros"], verbose=0)
    assert only_zeros.best is None
    assert "every candidate disqualified" in str(only_zeros)
    with pytest.raises(ValueError, match="every candidate was disqualified"):
        suggest_initializer(model, x, y, candidates=["zeros"], apply=True, verbose=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.layers[0].kernel), 0.0)


# -- apply=True -----------------------------------------------------------------------------


@agnostic
def test_apply_sets_the_winner_and_a_saved_model_records_it(tmp_path, run_python):
    x, y = _data()
    model = _compiled(depth=4)
    biases = _numpy([layer.bias for layer in model.layers])
    report = suggest_initializer(
        model, x, y, candidates=["current", "lsuv", "orthogonal"], apply=True, verbose=0
    )
    best = report.best
    assert report.applied and best.name in ("lsuv", "orthogonal")
    # the kernels measured: the model now scores what the winner scored
    assert ik.diagnose(model, x).metrics["h3"]["activation_std"] > 0.1
    for layer in model.layers:
        assert (
            keras.saving.serialize_keras_object(layer.kernel_initializer)
            == (best.initializers[layer.name])
        )
    for before, layer in zip(biases, model.layers):  # biases untouched
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(layer.bias))
    path = tmp_path / "model.keras"
    model.save(path)
    kernels = {layer.name: _numpy([layer.kernel])[0].tolist() for layer in model.layers}
    (tmp_path / "kernels.json").write_text(json.dumps(kernels))
    expected = type(model.layers[0].kernel_initializer).__name__
    out = run_python(
        """
        import json
        import keras
        import numpy as np
        import keras_initkit

        model = keras.saving.load_model("model.keras")
        kernels = json.load(open("kernels.json"))
        for layer in model.layers:
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(layer.kernel), kernels[layer.name], rtol=0, atol=0
            )
        print(type(model.layers[0].kernel_initializer).__name__)
        print(model.layers[0].get_config()["kernel_initializer"]["class_name"])
        """
    )
    assert out.split() == [expected, expected]


# -- the two nets (TensorFlow only: they train) ------------------------------------


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train = scaler.transform(x_train).astype("float32")
    x_val = scaler.transform(x_val).astype("float32")
    return x_train, y_train, x_val, y_val


def _deep(depth, activation):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,))])
    for _ in range(depth):
        model.add(keras.layers.Dense(64, activation=activation))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def test_on_the_demo_net_the_suggestion_beats_keras_default(digits):
    x_train, y_train, x_val, y_val = digits
    model = _deep(32, "relu")
    default = model.get_weights()
    report = suggest_initializer(model, x_train[:256], y_train[:256], apply=True, verbose=0)
    assert report.best.name != "current"
    suggested = model.get_weights()  # only the kernels differ from `default`
    model.optimizer.build(model.trainable_variables)
    fresh = _numpy(model.optimizer.variables)  # step 0, zero moments, the learning rate
    accuracy = {}
    # One model trained twice from the two starts: one trace of the train step.
    for name, weights in (("default", default), ("suggested", suggested)):
        model.set_weights(weights)
        for variable, value in zip(model.optimizer.variables, fresh):
            variable.assign(value)
        keras.utils.set_random_seed(1)  # the same shuffling
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            epochs=1,
            batch_size=64,
            verbose=0,
        )
        accuracy[name] = history.history["val_accuracy"][-1]
    assert accuracy["suggested"] > accuracy["default"] + 0.2, accuracy


def test_on_a_50_layer_tanh_mlp_it_picks_an_orthogonal_initializer(digits):
    x_train, y_train, _, _ = digits
    model = _deep(50, "tanh")
    report = suggest_initializer(model, x_train[:256], y_train[:256], verbose=0)
    assert report.best.name in ("orthogonal", "lsuv"), str(report)
    # He init starts a deep tanh net chaotic: inputs a step apart end up far apart
    assert report["he_normal"].sensitivity > 3 * report["orthogonal"].sensitivity

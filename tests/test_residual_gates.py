"""Residual branches closed by a learned scale (LayerScale, a zero-initialized batch-norm
γ or last layer): their small gradients are by design, and the vanishing rule judges
them divided by the scale."""

import keras
import numpy as np
import pytest

import keras_initkit
from keras_initkit.callbacks import TrainingMonitor
from keras_initkit.checks.gradients import VANISHING, branch_scale
from keras_initkit.probe import make_sites, resolve_layers
from keras_initkit.probe.selection import residual_gates

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 12)).astype("float32")
Y = RNG.integers(0, 3, size=64)


@keras.saving.register_keras_serializable("initkit_tests")
class LayerScale(keras.layers.Layer):
    """ConvNeXt's (keras.applications.convnext.LayerScale): x * gamma, gamma = init."""

    def __init__(self, init=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, shape):
        self.gamma = self.add_weight(
            shape=(shape[-1],), initializer=keras.initializers.Constant(self.init)
        )

    def call(self, x):
        return x * self.gamma


def _residual(gate="scale", init=1e-6, blocks=2, width=16):
    """Stem, `blocks` residual blocks (Dense relu -> Dense -> gate, added to the
    stream), head. `gate`: "scale" (LayerScale of `init`), "bn" (batch norm, γ =
    `init`), "zero" (the branch's last Dense zero-initialized), None (no gate)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(width, name="stem")(inputs)
    for b in range(blocks):
        last = "zeros" if gate == "zero" else "glorot_uniform"
        r = keras.layers.Dense(width, activation="relu", name=f"b{b}_in")(h)
        r = keras.layers.Dense(width, kernel_initializer=last, name=f"b{b}_out")(r)
        if gate == "scale":
            r = LayerScale(init, name=f"b{b}_scale")(r)
        elif gate == "bn":
            gamma = keras.initializers.Constant(init)
            r = keras.layers.BatchNormalization(gamma_initializer=gamma, name=f"b{b}_bn")(r)
        h = h + r
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _vanishing(report):
    return {f.layer: f for f in report.findings if f.rule == "vanishing"}


def test_residual_gates_finds_the_layer_closing_each_branch():
    model = _residual("scale")
    gates = residual_gates(model)
    by_name = {layer.name: gates.get(id(layer)) for layer in model.layers}
    assert by_name["b0_in"].name == by_name["b0_out"].name == "b0_scale"
    assert by_name["b1_in"].name == "b1_scale"
    # Not in a branch: the stem (its output feeds the branch and the stream), the
    # gate itself, the head; a ResNet's zero-γ batch norm closes its branch too.
    assert by_name["stem"] is None and by_name["b0_scale"] is None and by_name["head"] is None
    resnet = _residual("bn")
    assert residual_gates(resnet)[id(resnet.get_layer("b0_in"))].name == "b0_bn"
    # No add: a scale on the main path is not a residual branch's.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = LayerScale(name="scale")(keras.layers.Dense(8, name="first")(inputs))
    plain = keras.Model(inputs, keras.layers.Dense(3)(h))
    assert residual_gates(plain) == {}


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("gate", ["scale", "bn"])
def test_a_branch_behind_a_tiny_scale_is_not_vanishing(gate):
    """ConvNeXt's LayerScale (γ = 1e-6) made every branch layer a 'vanishing gradients'
    finding with the fix 'add residual connections'."""
    model = _residual(gate)
    report = keras_initkit.diagnose(model, X, Y)
    ratios = {n: report.metrics[n]["gradient_ratio"] for n in ("b0_in", "b0_out", "b1_in")}
    assert max(ratios.values()) < 1e-3  # measured and shown as they are ...
    assert not _vanishing(report)  # ... but small by design: no finding
    assert "Note: 4 layer(s) run in residual branches closed by a scale of 1.0e-06" in str(report)
    assert report.gradient_ratio == report.metrics["stem"]["gradient_ratio"]
    # Judged divided by the scale: the strictest threshold shows the value and says why.
    strict = keras_initkit.diagnose(model, X, Y, thresholds={"gradient_ratio": 1.0})
    sites = {s.name: s for s in make_sites(model, resolve_layers(model))}
    judged = {n: VANISHING.measure(sites[n], strict.metrics[n]) for n in ratios}
    for name, ratio in ratios.items():
        assert judged[name] == pytest.approx(ratio / 1e-6, rel=1e-4)
    found = _vanishing(strict)
    assert {n for n, v in judged.items() if v < 1.0} == set(found) & set(ratios)
    assert gate == "bn" or set(found) & set(ratios)  # batch norm restores the branch's scale
    for name in set(found) & set(ratios):
        assert found[name].value == judged[name]
        assert "its residual branch's scale (1.0e-06)" in found[name].message


@pytest.mark.backend_agnostic
def test_the_same_branch_is_judged_as_any_layer_without_its_scale():
    """Below the gate's scale the rule still fires: γ = 1e-6 makes no layer exempt
    from a genuinely vanishing gradient, and a scale above 0.1 changes nothing."""
    model = _residual("scale", init=0.5)
    sites = {s.name: s for s in make_sites(model, resolve_layers(model))}
    assert sites["b0_in"].gate is not None and branch_scale(sites["b0_in"]) == 1.0
    report = keras_initkit.diagnose(model, X, Y)
    for name in ("b0_in", "b0_out"):
        measured = report.metrics[name]["gradient_ratio"]
        assert VANISHING.measure(sites[name], report.metrics[name]) == measured
    # The scale is read when judging: it grows in training, so does what it excuses.
    small = _residual("scale")
    site = next(s for s in make_sites(small, resolve_layers(small)) if s.name == "b0_in")
    assert branch_scale(site) == pytest.approx(1e-6)
    small.get_layer("b0_scale").gamma.assign(np.full(16, 1e-2, "float32"))
    assert branch_scale(site) == pytest.approx(1e-2)
    small.get_layer("b0_scale").gamma.assign(np.full(16, 0.2, "float32"))
    assert branch_scale(site) == 1.0


@pytest.mark.backend_agnostic
def test_the_tiny_scale_itself_is_not_exploding_under_sgd():
    """γ = 1e-6 under SGD: its first step is many times γ, which is how it grows (a
    fresh ConvNeXtTiny under SGD: 18 'exploding gradients' findings, update_ratio 140)."""
    model = _residual("scale")
    model.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    report = keras_initkit.diagnose(model, X, Y)
    assert report.metrics["b0_scale"]["update_ratio"] > 1.0  # measured and shown
    assert not [f for f in report.findings if f.kind == "exploding_gradients"]
    # Grown past 0.1 it is a weight as any: a step larger than it is exploding.
    model.get_layer("b0_scale").gamma.assign(np.full(16, 0.2, "float32"))
    model.compile(
        keras.optimizers.SGD(1e4), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    found = {f.layer for f in keras_initkit.diagnose(model, X, Y).findings if f.rule == "exploding"}
    assert "b0_scale" in found


@pytest.mark.backend_agnostic
def test_a_zero_last_layer_leaves_its_branch_unjudged():
    """Fixup and ZerO-style branches: the last layer starts at zero, the layers before
    it get exactly zero gradient. Not 'vanishing': the branch is off until it learns."""
    model = _residual("zero")
    report = keras_initkit.diagnose(model, X, Y, thresholds={"gradient_ratio": 1.0})
    assert report.metrics["b0_in"]["gradient_ratio"] == 0.0
    sites = {s.name: s for s in make_sites(model, resolve_layers(model))}
    judged = {n: VANISHING.measure(sites[n], v) for n, v in report.metrics.items()}
    assert judged["b0_in"] is None and judged["b1_in"] is None
    # The zero layers themselves are judged, as measured.
    for name in ("stem", "b0_out", "b1_out"):
        assert judged[name] == report.metrics[name]["gradient_ratio"]
    assert not {"b0_in", "b1_in"} & set(_vanishing(report))
    assert "2 layer(s) run in residual branches closed by a scale of 0.0e+00" in str(report)


def test_a_gate_on_the_main_path_excuses_nothing():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="relu", name="first")(inputs)
    h = LayerScale(name="scale")(keras.layers.Dense(16, name="second")(h))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    found = _vanishing(keras_initkit.diagnose(model, X, Y))
    assert {"first", "second"} <= set(found)
    assert "residual branch" not in found["first"].message


@pytest.mark.backend_agnostic
def test_the_monitor_applies_the_same_rule():
    monitors = [
        TrainingMonitor((X[:32], Y[:32]), gradients=True, verbose=0, **threshold)
        for threshold in ({}, {"vanishing_threshold": 1.0})
    ]
    for monitor in monitors:
        _residual("scale").fit(X, Y, batch_size=32, epochs=1, callbacks=[monitor], verbose=0)
    assert not [f for f in monitors[0].findings if f.rule == "vanishing"]
    strict = [f for f in monitors[1].findings if f.rule == "vanishing"]
    assert any("its residual branch's scale" in f.message for f in strict)
    assert all(("residual branch" in f.message) == (f.layer[0] == "b") for f in strict)


def test_the_dashboard_does_not_flag_what_the_rule_judges_divided():
    """The monitor's meta record exempts the branch layers from the dashboard's and
    `keras-initkit report`'s per-value flags of `gradient_ratio` (which would paint
    ConvNeXt's branches as vanishing), and the small scale from `update_ratio`'s."""
    from keras_initkit.checks import GradientCheck, assign
    from keras_initkit.checks.book import exempt_layers

    model = _residual("scale")
    sites = make_sites(model, resolve_layers(model))
    exempt = exempt_layers(assign([GradientCheck()], [], sites))
    assert set(exempt["below"]["gradient_ratio"]) == {"b0_in", "b0_out", "b1_in", "b1_out"}
    assert set(exempt["above"]["update_ratio"]) == {"b0_scale", "b1_scale"}
    plain = _residual(None)
    assert (
        exempt_layers(assign([GradientCheck()], [], make_sites(plain, resolve_layers(plain)))) == {}
    )


@pytest.mark.backend_agnostic
def test_a_branch_whose_scale_grew_is_judged_on_the_dashboard_from_then_on(tmp_path):
    """The layers record was written once per fit, at its start: a branch whose scale
    grew past 0.1 stayed exempt on the dashboard while the monitor judged it. Now the
    record is written again when the exemptions change, and the layers that left are
    judged from that step on (their earlier values, logged while exempt, are not)."""
    from keras_initkit.dashboard import events

    model = _residual("scale")
    monitor = TrainingMonitor((X[:32], Y[:32]), gradients=True, log_dir=tmp_path, verbose=0)
    model.fit(X, Y, batch_size=16, epochs=1, callbacks=[monitor], verbose=0)
    run = events.read_run(str(tmp_path / "initkit"))
    assert set(run.exempt["below"]["gradient_ratio"]) == {"b0_in", "b0_out", "b1_in", "b1_out"}
    assert run.judged_from == {}
    model.get_layer("b0_scale").gamma.assign(np.ones(16, "float32"))  # the branch opened
    model.fit(X, Y, batch_size=16, epochs=1, callbacks=[monitor], verbose=0)
    run = events.read_run(str(tmp_path / "initkit"))
    assert set(run.exempt["below"]["gradient_ratio"]) == {"b1_in", "b1_out"}
    assert run.exempt["above"]["update_ratio"] == ["b1_scale"]
    assert run.judged_from == {}
    assert run.exempt_until == {  # 4 steps in the first fit; each on its side only
        "below": {"gradient_ratio": {"b0_in": 4, "b0_out": 4}},
        "above": {"update_ratio": {"b0_scale": 4}},
    }

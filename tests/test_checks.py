"""The rule book: one source for thresholds, texts and definitions, read alike by
`diagnose`, the monitors and `keras-initkit report`."""

import inspect
import math
import pathlib

import keras
import numpy as np
import pytest
from test_diagnose import X, Y, _mlp
from test_monitors import _measure, _normal

import keras_initkit
from keras_initkit import checks
from keras_initkit.callbacks import (
    BatchNormMonitor,
    DeadUnitMonitor,
    Finding,
    GradientMonitor,
    Monitor,
    SaturationMonitor,
    TrainingMonitor,
)
from keras_initkit.health import DEFAULT_THRESHOLDS, flagged

MONITORS = [SaturationMonitor, DeadUnitMonitor, BatchNormMonitor, GradientMonitor, TrainingMonitor]
pytestmark = [
    pytest.mark.filterwarnings("ignore::keras_initkit.callbacks.InitkitWarning"),
    pytest.mark.backend_agnostic,
]


def test_default_thresholds_are_derived_from_the_rules():
    rules = checks.RULES.values()
    assert DEFAULT_THRESHOLDS is checks.DEFAULT_THRESHOLDS
    assert DEFAULT_THRESHOLDS == {r.threshold: r.default for r in rules if r.threshold}
    for rule in rules:
        assert rule.definition and rule.fix and rule.kind, rule.name
        if rule.threshold:
            assert rule.valid(rule.default, rule.threshold) == rule.default


@pytest.mark.parametrize("monitor", MONITORS)
def test_every_monitor_threshold_defaults_to_its_rule(monitor):
    by_argument = {r.argument: r for r in checks.RULES.values() if r.argument}
    parameters = inspect.signature(monitor.__init__).parameters
    own = [name for name in parameters if name.endswith("_threshold")]
    assert own
    for name in own:
        assert parameters[name].default == by_argument[name].default, name


def test_flagged_is_the_per_value_rules():
    assert flagged("saturated_fraction", 0.21) and not flagged("saturated_fraction", 0.2)
    assert flagged("inactive_fraction", 0.6)  # the dead_fraction threshold
    assert flagged("gradient_norm", math.inf) and flagged("gradient_norm", math.nan)
    assert not flagged("gradient_norm", 1e6)  # a norm alone is no finding
    assert flagged("update_ratio", 1.5) and not flagged("update_ratio", 0.5)
    assert flagged("gradient_ratio", 1e-4) and not flagged("gradient_ratio", 1.0)
    assert flagged("gradient_ratio", 1.5e3)  # exploding_ratio: the vanishing rule mirrored
    assert not flagged("gradient_ratio", 1.5e3, rules={"vanishing"})
    # Beyond its threshold: the initial moving statistics weigh more than 5% (judged at
    # the end of an epoch, as the mismatch rules it supersedes).
    assert flagged("bn_init_weight", 0.06) and not flagged("bn_init_weight", 0.05)
    assert not flagged("activation_std", 1e6)  # judged between layers, not alone
    assert flagged("bn_std_ratio", 2.5, {**DEFAULT_THRESHOLDS, "bn_std_ratio": 2.0})
    assert not flagged("bn_std_ratio", 2.5, {**DEFAULT_THRESHOLDS, "bn_std_ratio": 3.0})


def test_thresholds_are_validated_by_their_rule():
    with pytest.raises(ValueError, match=r"Received: saturated_fraction=1.5"):
        checks.check_thresholds({"saturated_fraction": 1.5})
    with pytest.raises(ValueError, match=r"Received: gradient_ratio=1000"):
        checks.check_thresholds({"gradient_ratio": 1000})  # a fraction: below it vanishes
    with pytest.raises(ValueError, match=r"Received: 'dead'"):
        checks.check_thresholds({"dead": 0.1})
    with pytest.raises(ValueError, match="Received: nope"):
        checks.DeadUnitCheck(nope=1)


def test_one_finding_type_with_kind_read_from_the_rule():
    for rule in checks.RULES.values():
        finding = Finding("dense", rule.name, 1.0, None, "dense: ...")
        assert finding.kind == rule.kind
        assert finding.to_dict() == {
            "layer": "dense",
            "rule": rule.name,
            "value": 1.0,
            "step": None,
            "message": "dense: ...",
            "kind": rule.kind,
        }
    assert Finding("dense", "my_rule", None, 3, "...").kind == "my_rule"
    assert keras_initkit.health.Finding is Finding is checks.Finding
    with pytest.raises(AttributeError):
        Finding("dense", "dead_fraction", 1.0, None, "").kind = "dead"


def test_diagnose_and_the_gradient_monitor_share_one_vanishing_definition():
    model = _mlp("sigmoid", keras.initializers.RandomNormal(stddev=0.05), depth=8)
    x, y = X[:64], Y[:64]
    report = keras_initkit.diagnose(model, x, y)
    monitor = GradientMonitor((x, y), verbose=0)
    _measure(monitor, model)
    diagnosed = {f.layer: f.value for f in report.findings if f.rule == "vanishing"}
    monitored = {f.layer: f.value for f in monitor.findings if f.rule == "vanishing"}
    assert diagnosed.keys() == monitored.keys() and "dense_0" in diagnosed
    for layer, value in diagnosed.items():
        assert monitored[layer] == pytest.approx(value, rel=1e-4)
        norms = report.metrics[layer]["gradient_norm"], report.metrics["out"]["gradient_norm"]
        assert value == pytest.approx(norms[0] / norms[1], rel=1e-6)
        assert value < DEFAULT_THRESHOLDS["gradient_ratio"]
    assert report.gradient_ratio == diagnosed["dense_0"]  # AutoTrainer's ratio
    assert {f.kind for f in report.findings if f.rule == "vanishing"} == {"vanishing_gradients"}


class _HeadFirst(keras.Model):
    """A subclassed model that creates its head before its body: its layer order is not
    its forward order."""

    def __init__(self):
        super().__init__()
        self.head = keras.layers.Dense(3, name="head")
        self.body = [keras.layers.Dense(16, activation="tanh", name=f"h{i}") for i in range(3)]

    def call(self, x):
        for layer in self.body:
            x = layer(x)
        return self.head(x)


@pytest.mark.backend_agnostic
def test_gradient_ratios_are_relative_to_the_last_layer_in_forward_order():
    keras.utils.set_random_seed(0)
    model = _HeadFirst()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = X[:64], Y[:64]
    model(x[:2])
    assert model.layers[0].name == "head"  # tracked first
    report = keras_initkit.diagnose(model, x, y)
    norms = {name: v["gradient_norm"] for name, v in report.metrics.items()}
    assert report.metrics["head"]["gradient_ratio"] == 1.0
    assert report.gradient_ratio == pytest.approx(norms["h0"] / norms["head"], rel=1e-6)
    for monitor in (GradientMonitor((x, y), verbose=0), TrainingMonitor((x, y), gradients=True)):
        latest = _measure(monitor, model)
        assert latest["head"]["gradient_ratio"] == 1.0, type(monitor).__name__
        assert latest["h0"]["gradient_ratio"] == pytest.approx(
            report.metrics["h0"]["gradient_ratio"], rel=1e-4
        )


def test_diagnose_and_the_training_monitor_find_the_same_activation_problems():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(
        8, activation="tanh", kernel_initializer=keras.initializers.Constant(3.0)
    )(inputs)
    h = keras.layers.Dense(
        8, activation="relu", bias_initializer=keras.initializers.Constant(-50.0), name="dead"
    )(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    x = np.abs(_normal(64, 6)) + 0.5
    report = keras_initkit.diagnose(model, x)
    monitor = TrainingMonitor(x, verbose=0)
    _measure(monitor, model)
    forward = {"saturated_fraction", "dead_fraction", "inactive_fraction"}
    diagnosed = {(f.layer, f.rule, f.value) for f in report.findings if f.rule in forward}
    monitored = {(f.layer, f.rule, f.value) for f in monitor.findings if f.rule in forward}
    assert diagnosed == monitored and len(diagnosed) == 2
    # One rule, one observation: the texts differ only by the step and the fix.
    rule = checks.RULES["dead_fraction"]
    (seen,) = [f for f in monitor.findings if f.rule == "dead_fraction"]
    (found,) = [f for f in report.findings if f.rule == "dead_fraction"]
    assert seen.message == f"dead (step 0): 100% of units dead (8 of 8) — {rule.fix}"
    assert found.message == f"dead: 100% of units dead (8 of 8) — {rule.fix_at_init}"


def test_a_monitor_is_the_base_with_checks():
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="tanh", name="tanh")]
        + [keras.layers.Dense(1, name="out")]
    )
    model.compile(optimizer="sgd", loss="mse")
    data = (_normal(32, 8), _normal(32, 1))
    used = [checks.SaturationCheck(saturation_threshold=0.0), checks.GradientCheck()]
    monitor = Monitor(data, checks=used, verbose=0)
    _measure(monitor, model)
    assert set(monitor.latest["tanh"]) >= {"saturated_fraction", "gradient_norm"}
    assert monitor.checks == used
    assert [(f.layer, f.rule) for f in monitor.findings] == [("tanh", "saturated_fraction")]


@pytest.mark.parametrize("cls", [BatchNormMonitor, GradientMonitor])
def test_histograms_are_rejected_where_they_have_no_effect(cls):
    with pytest.raises(ValueError, match="has no effect.*Received: histograms=True"):
        cls((_normal(8, 8), _normal(8, 1)), histograms=True)


@pytest.mark.parametrize("verbose", [2, 0.5, "loud"])
def test_one_verbose_policy(verbose):
    assert SaturationMonitor(_normal(8, 8)).verbose == "auto"
    with pytest.raises(ValueError, match=r'0, 1 or "auto"|one of'):
        SaturationMonitor(_normal(8, 8), verbose=verbose)


def test_every_rule_is_listed_once_in_the_docs():
    page = (pathlib.Path(__file__).parents[1] / "docs" / "health.md").read_text()
    section = page.split("### The rule book", 1)[1].split("\n### ", 1)[0]
    table = next(block for block in section.split("\n\n") if block.startswith("| rule |"))
    listed = [row.split("|")[1].strip().strip("`") for row in table.splitlines()[2:]]
    assert listed == list(checks.RULES)


def test_a_new_rule_and_check_plug_into_monitors_and_flagged_alike(tmp_path):
    low = checks.Rule(
        name="low_std",
        kind="vanishing_activations",
        metric="activation_std",
        definition="output std below the threshold",
        observation="output std {value:.2g}",
        fix="rescale the kernel.",
        threshold="low_std",
        default=0.5,
        below=True,
        valid=lambda value, name: float(value),
        argument="low_threshold",
    )

    class LowStd(checks.Check):
        rules = (low,)
        metrics = ("activation_std",)
        log_metrics = ("activation_std",)
        layout = {"Activations": ("activation_std",)}

        def reducers(self):
            return [keras_initkit.probe.ActivationMoments()]

        def applies(self, site):
            return site.has_kernel

    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                4, kernel_initializer=keras.initializers.Constant(1e-3), name="tiny"
            ),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(1e3), name="big"),
        ]
    )
    monitor = Monitor(_normal(32, 4), checks=[LowStd(low_threshold=0.5)], verbose=0)
    _measure(monitor, model)
    assert [(f.layer, f.rule, f.kind) for f in monitor.findings] == [
        ("tiny", "low_std", "low_std")  # a rule outside the book is its own kind
    ]
    assert monitor.findings[0].message.startswith("tiny (step 0): output std ")
    assert monitor.findings[0].message.endswith(" — rescale the kernel.")
    assert low.fires(0.1, 0.5) and not low.fires(0.6, 0.5) and low.fires(math.nan, 0.5)


def test_monitors_write_the_layers_and_findings_records_for_the_dashboard(tmp_path):
    from keras_initkit.dashboard import events

    inputs = keras.Input((4,))
    h = keras.layers.Dense(
        4, activation="relu", kernel_initializer=keras.initializers.Constant(-1.0), name="dead"
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.abs(_normal(16, 4)) + 0.1, _normal(16, 1)
    monitor = TrainingMonitor((x, y), log_dir=tmp_path, gradients=True, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[monitor], verbose=0)
    (run,) = events.read_logdir(str(tmp_path))
    assert run.has_meta and run.layers[:2] == ["dead", "head"]
    assert run.thresholds["dead_fraction"] == DEFAULT_THRESHOLDS["dead_fraction"]
    # gradient_ratio's upper limit is `exploding_ratio`'s (vanishing's is a lower one).
    assert run.thresholds["gradient_ratio"] == DEFAULT_THRESHOLDS["exploding_gradient_ratio"]
    recorded = {(f["rule"], f["layer"]) for f in run.findings}
    assert recorded == {(f.rule, f.layer) for f in monitor.findings}
    dead = next(f for f in run.findings if f["rule"] == "dead_fraction")
    assert dead["message"] == "100% of units dead (4 of 4)" and dead["step"] == 0
    assert dead["fix"] == checks.RULES["dead_fraction"].fix
    assert dead["kind"] == "dead"
    assert (dead["metric"], dead["threshold"], dead["value"]) == ("dead_fraction", 0.5, 1.0)


def test_console_and_dashboard_group_layers_into_the_same_runs():
    from keras_initkit.checks.summary import layer_ranges
    from keras_initkit.dashboard import model
    from keras_initkit.table import consecutive_runs

    order = [f"l{i}" for i in range(8)]
    names = ["l5", "l1", "zz", "l2", "l3", "l7", "l6", "aa", "l1"]
    assert consecutive_runs(names, order) == [
        ["l1", "l2", "l3"],
        ["l5", "l6", "l7"],
        ["aa"],
        ["zz"],
    ]
    assert consecutive_runs([], order) == []
    assert layer_ranges(names, order) == "l1 … l3, l5 … l7, aa, zz"
    assert model.ranges(names, order) == "l1 – l3 (3), l5 – l7 (3), aa, zz"


def test_the_first_step_a_batchnorm_mismatch_rule_judges():
    from keras_initkit.checks.batchnorm import first_step_at_or_below

    assert first_step_at_or_below(0.99, 0.05) == 299  # 0.99^298 = 0.0500 > 0.05 ≥ 0.99^299
    assert 0.99**299 <= 0.05 < 0.99**298
    for momentum, limit in ((0.9, 0.05), (0.5, 0.25), (0.999, 0.01), (0.3, 1e-9)):
        n = first_step_at_or_below(momentum, limit)
        assert momentum**n <= limit < momentum ** (n - 1), (momentum, limit, n)
    assert first_step_at_or_below(0.5, 0.5) == 1  # at the threshold: not above it
    assert first_step_at_or_below(0.0, 0.05) == 1  # step 0 holds the initial statistics
    assert first_step_at_or_below(0.9, 1.0) == 0  # the rule never waits
    assert first_step_at_or_below(1.0, 0.05) is None  # the statistics never move
    assert first_step_at_or_below(0.9, 0.0) is None  # never at or below 0


def test_the_layers_record_says_from_which_step_the_mismatch_rules_judge(tmp_path):
    """The dashboard painted ResNet50's `bn_mean_shift` cells warm, and `keras-initkit
    report` marked them `!`, while the monitor's only finding was `bn_init_weight`, which
    supersedes the mismatch rules until the initial statistics weigh ≤ 5%."""
    from keras_initkit.dashboard import events
    from keras_initkit.dashboard import model as dashboard

    keras.utils.set_random_seed(1)
    net = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(momentum=0.9, name="bn"),
            keras.layers.BatchNormalization(momentum=0.9, name="frozen"),
            keras.layers.Dense(1),
        ]
    )
    net.get_layer("frozen").trainable = False
    net.compile(optimizer="sgd", loss="mse")
    x, y = _normal(40, 8), _normal(40, 1)
    monitor = BatchNormMonitor(x, log_dir=tmp_path, init_weight_threshold=0.2, verbose=0)
    net.fit(x, y, batch_size=8, epochs=1, callbacks=[monitor], verbose=0)
    assert {(f.layer, f.rule) for f in monitor.findings} >= {("bn", "bn_init_weight")}
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.thresholds["bn_init_weight"] == 0.2  # its own threshold, drawn too
    # 0.9^16 = 0.185 ≤ 0.2 < 0.9^15; the frozen layer is not judged (training normalizes
    # with its moving statistics too: no mismatch between training and inference).
    assert run.judged_from == {"bn_mean_shift": {"bn": 16}, "bn_std_ratio": {"bn": 16}}
    assert "frozen" in run.exempt["above"]["bn_mean_shift"]
    # The batch-norm rules judge at the end of an epoch only: here step 5.
    metrics = ["bn_init_weight", "bn_mean_shift", "bn_std_ratio"]
    assert run.epoch_ends == {"metrics": metrics, "steps": [5]}
    flagged = dashboard.run_flagger(run)
    assert flagged("bn_init_weight", 0.5, "bn", 5) and not flagged("bn_init_weight", 0.5, "bn", 4)
    assert not flagged("bn_mean_shift", 3.0, "frozen", 5)
    assert not flagged("bn_mean_shift", 3.0, "bn", 5)
    assert flagged("bn_mean_shift", 3.0, "bn")  # at no known step: judged
    flagged = dashboard.flagger(run.thresholds, judged_from=run.judged_from)  # epochs aside
    assert not flagged("bn_mean_shift", 3.0, "bn", 15) and flagged("bn_mean_shift", 3.0, "bn", 16)
    assert flagged("gradient_norm", math.nan, "bn", 4)  # not finite: at any step
    heatmap = dashboard.heatmap(run, "bn_mean_shift")
    assert heatmap["judged_from"] == [16 if n == "bn" else 0 for n in heatmap["layers"]]

"""keras-initkit: `report` on real event files (monitor-written, tf.summary-written, fixtures)."""

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_initkit
import keras_initkit.callbacks
from keras_initkit import cli
from keras_initkit.dashboard import model as dashboard

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="writes event files with tf.summary"
)


def _run(*args, cwd=None):
    """`python -m keras_initkit ARGS` in a fresh interpreter."""
    root = str(Path(keras_initkit.__file__).resolve().parents[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "keras_initkit", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="module")
def monitor_logs(tmp_path_factory):
    """Real logs: a TrainingMonitor (with gradients) over a 3-epoch fit."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = rng.integers(0, 3, size=96)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(
                16,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
                name="saturating",
            ),
            keras.layers.Dense(3, name="head"),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = tmp_path_factory.mktemp("logs") / "run_a"
    monitor = keras_initkit.callbacks.TrainingMonitor(
        (x[:64], y[:64]), log_dir=str(log_dir), gradients=True
    )
    with pytest.warns(keras_initkit.callbacks.InitkitWarning):
        model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[monitor])
    return log_dir, monitor.latest


@pytest.fixture(scope="module")
def tf_summary_logs(tmp_path_factory):
    """Event files written with tf.summary under the DESIGN scheme: `<metric>/<layer>`."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("writes event files with tf.summary")
    import tensorflow as tf

    log_dir = tmp_path_factory.mktemp("tf_logs")
    writer = tf.summary.create_file_writer(str(log_dir / "initkit"))
    with writer.as_default():
        for step, dead in enumerate([0.1, 0.4, 0.9]):
            tf.summary.scalar("dead_fraction/block/dense_1", dead, step=step * 10)
            tf.summary.scalar("activation_std/block/dense_1", 1.0 - 0.3 * step, step=step * 10)
            tf.summary.histogram("activations/block/dense_1", np.arange(5.0), step=step * 10)
    writer.close()
    return log_dir


def test_report_on_monitor_logs_subprocess(monitor_logs):
    log_dir, latest = monitor_logs
    proc = _run("report", log_dir, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    run = data["runs"]["initkit"]
    assert data["thresholds"]["saturated_fraction"] == 0.2
    # The monitor recorded its lower-is-worse thresholds too (vanishing gradients).
    assert data["lower_thresholds"]["gradient_ratio"] == 1e-3
    assert data["thresholds"]["gradient_ratio"] == 1e3  # exploding
    saturated = run["saturating"]["saturated_fraction"]
    assert saturated["flagged"] is True
    assert saturated["last"] == pytest.approx(latest["saturating"]["saturated_fraction"], rel=1e-6)
    # at train begin, then at the end of each of 3 epochs of 3 steps
    assert (saturated["updates"], saturated["first_step"], saturated["last_step"]) == (4, 0, 9)
    assert run["hidden"]["dead_fraction"]["flagged"] is False
    assert run["head"]["gradient_norm"]["last"] == pytest.approx(
        latest["head"]["gradient_norm"], rel=1e-6
    )


def test_report_text_and_markdown(monitor_logs):
    log_dir, _ = monitor_logs
    text = cli.report(str(log_dir), "text", layers=True)
    line = next(row for row in text.splitlines() if "saturated_fraction" in row)
    assert line.count("!") == 2  # first and latest both flagged
    assert "Run initkit: 3 layer(s)" in text
    markdown = cli.report(str(log_dir), "markdown")
    assert "| layer | metric | first | last | trend |" in markdown


def test_report_finds_runs_below_the_log_dir(monitor_logs):
    log_dir, _ = monitor_logs
    text = cli.report(str(log_dir.parent), "text")  # <parent>/run_a/initkit
    assert "Run run_a/initkit" in text


@TF_ONLY
def test_report_on_tf_summary_logs(tf_summary_logs, capsys):
    assert cli.main(["report", str(tf_summary_logs), "--format", "json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"]["initkit"]
    dead = run["block/dense_1"]["dead_fraction"]  # a nested layer name keeps its "/"
    assert (dead["first"], dead["last"]) == pytest.approx((0.1, 0.9))
    assert (dead["first_flagged"], dead["flagged"]) == (False, True)
    assert dead["trend"] == "rising" and dead["change"] == pytest.approx(8.0)
    assert run["block/dense_1"]["activation_std"]["trend"] == "falling"
    assert set(run["block/dense_1"]) == {"dead_fraction", "activation_std"}  # no histogram
    # LOGDIR/initkit can be given directly too.
    assert cli.main(["report", str(tf_summary_logs / "initkit")]) == 0
    assert "0.9!" in capsys.readouterr().out


def test_missing_or_foreign_log_dir_exits_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and captured.out == ""
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no keras_initkit events" in capsys.readouterr().err


@TF_ONLY
def test_keras_tensorboard_logs_are_not_ours(tmp_path, capsys):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        tf.summary.scalar("epoch_loss", 1.0, step=0)
    writer.close()
    assert cli.main(["report", str(tmp_path / "train")]) == 2
    assert "no keras_initkit events" in capsys.readouterr().err


def test_help_for_every_command(capsys):
    for argv in (["--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "report" in out and "--format" in out and "--html" in out and "--layers" in out
    for argv in (["report", "logs", "--format", "xml"], []):
        with pytest.raises(SystemExit) as exit:
            cli.main(argv)
        assert exit.value.code == 2


def test_demo_is_not_a_subcommand_but_says_where_it_is(capsys):
    assert cli.main(["demo", "--quick"]) == 2
    assert "tox -e demo" in capsys.readouterr().err


def test_all_shows_every_logged_metric(monitor_logs):
    log_dir, _ = monitor_logs
    headline = json.loads(cli.report(str(log_dir), "json"))["runs"]["initkit"]
    everything = json.loads(cli.report(str(log_dir), "json", everything=True))["runs"]["initkit"]
    assert set(headline["saturating"]) <= set(cli.METRICS)
    assert {"saturated_low", "saturated_high", "weight_norm"} <= set(everything["saturating"])


@pytest.fixture(scope="module")
def fixture_logs(tmp_path_factory):
    """Four runs with the meta record and planted findings (keras_initkit.dashboard.fixtures)."""
    from keras_initkit.dashboard import fixtures

    log_dir = tmp_path_factory.mktemp("fixture_logs")
    return log_dir, fixtures.write_logs(log_dir, layers=6, steps=7)


def test_report_prints_findings_and_worst_layers_per_run(fixture_logs):
    from keras_initkit.dashboard import fixtures

    log_dir, names = fixture_logs
    text = cli.report(str(log_dir))
    blocks = dict((block.splitlines()[0].split(":")[0], block) for block in text.split("\n\n")[:-1])
    assert set(blocks) == {f"Run {name}/initkit" for name in fixtures.RUNS}
    default = blocks["Run keras-default/initkit"]
    assert "6 finding(s) in 2 group(s)" in default  # a finding per layer, as the monitor counts
    assert "! dead_fraction from step 10: dense_3 – dense_5 (3)" in default
    assert f"fix: {fixtures.FIX_DEAD}" in default
    worst = next(line for line in default.splitlines() if line.strip().startswith("dead_fraction"))
    assert worst.split()[1] == "dense_5" and worst.count("!") >= 1
    spread = next(line for line in default.splitlines() if "activation_std" in line)
    assert spread.split()[1] == "lowest" and ", highest " in spread  # no threshold: the range
    assert "no findings" in blocks["Run lsuv/initkit"]
    assert "derived" not in text  # the runs recorded their findings
    assert len(text.splitlines()) < 60  # a summary, not a line per layer and metric


def test_report_layers_option_and_json_findings(fixture_logs):
    log_dir, _ = fixture_logs
    table = cli.report(str(log_dir), layers=True)
    assert table.splitlines()[1].split()[:2] == ["layer", "metric"]
    data = json.loads(cli.report(str(log_dir), "json"))
    assert data["thresholds"]["dead_fraction"] == 0.5
    rules = [g["rule"] for g in data["findings"]["keras-default/initkit"]]
    assert rules == ["saturated_fraction", "dead_fraction"]


def test_report_derives_findings_when_the_run_recorded_none(monitor_logs):
    log_dir, _ = monitor_logs
    data = json.loads(cli.report(str(log_dir), "json"))
    (saturated,) = [g for g in data["findings"]["initkit"] if g["rule"] == "saturated_fraction"]
    assert saturated["layers"] == "saturating" and saturated["first_step"] == 0


def test_monitor_records_lower_thresholds_and_the_layers_a_rule_exempts(tmp_path):
    """An attention model's meta record: the vanishing rule's lower threshold, and the
    query and key projections it leaves out, so neither the dashboard nor the report
    flags their (expectedly) small gradients."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = keras.Input((8,), dtype="int32")
    h = keras.layers.Embedding(50, 16)(inputs)
    h = keras.layers.MultiHeadAttention(2, 8, name="mha")(h, h)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = rng.integers(0, 50, (32, 8)), rng.integers(0, 3, 32)
    monitor = keras_initkit.callbacks.TrainingMonitor(
        (x, y), gradients=True, log_dir=tmp_path, verbose=0
    )
    model.fit(x, y, epochs=1, batch_size=16, callbacks=[monitor], verbose=0)
    (run,) = cli.read_runs(str(tmp_path))
    assert run.lower_thresholds == {"gradient_ratio": 1e-3, "attention_entropy": 0.05}
    assert run.thresholds["gradient_ratio"] == 1e3
    # Site names: the inner layers' own, prefixed only where a name repeats.
    assert run.exempt == {"below": {"gradient_ratio": ["query", "key"]}}
    flagged = dashboard.run_flagger(run)
    assert not flagged("gradient_ratio", 1e-9, "key")
    assert flagged("gradient_ratio", 1e-9, "value")


def test_report_judges_a_run_without_thresholds_by_diagnose_rules_on_both_sides(tmp_path):
    """Logs without an `initkit/layers` record get `diagnose`'s thresholds per metric: a
    lower-is-worse rule's (vanishing gradients at 1e-3) is a lower threshold, not an
    upper one that would flag every healthy layer."""
    from keras_initkit import summary
    from keras_initkit.dashboard import html

    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    scalars = {"gradient_ratio/early": 1e-6, "gradient_ratio/mid": 0.5, "dead_fraction/mid": 0.0}
    writer.write(0, scalars=scalars)
    writer.close()
    data = json.loads(cli.report(str(tmp_path), "json", everything=True))
    assert data["lower_thresholds"]["gradient_ratio"] == 1e-3
    assert data["thresholds"]["gradient_ratio"] == 1e3
    assert data["lower_thresholds"]["attention_entropy"] == 0.05
    layers = data["runs"]["initkit"]
    assert layers["early"]["gradient_ratio"]["flagged"] is True
    assert layers["mid"]["gradient_ratio"]["flagged"] is False
    (group,) = data["findings"]["initkit"]
    assert group["layers"] == "early" and group["rule"] == "gradient_ratio below 0.001"
    (run,) = cli.read_runs(str(tmp_path))
    heatmap = html.report_data([run])["heatmaps"]["initkit"]["gradient_ratio"]
    assert (heatmap["lower"], heatmap["threshold"]) == (1e-3, 1e3)
    text = cli.report(str(tmp_path))
    assert "! gradient_ratio below 0.001 from step 0: early; worst 1e-06" in text


def test_report_worst_of_a_lower_is_worse_rule_is_its_smallest_value(tmp_path):
    """`vanishing_activations` (a layer's std as a ratio of the first one's: small is
    bad) was reported with its largest ratio as the worst ("worst 0.0008635 (c6)" where
    c7's was 3.7e-05): a rule that compares layers recorded no threshold, so the report
    could not tell its direction. It now records the bound its ratio crossed."""
    from types import SimpleNamespace

    from keras_initkit import summary
    from keras_initkit.callbacks.base import _record
    from keras_initkit.checks.activations import VANISHING_ACTIVATIONS, ActivationCheck

    check = ActivationCheck()
    records = [
        _record(check, SimpleNamespace(name=layer), VANISHING_ACTIVATIONS, value, "vanish", step)
        for layer, value, step in (("c7", 3.7e-5, 0), ("c6", 8.6e-4, 4))
    ]
    assert records[0]["threshold"] == 1 / check.thresholds["activation_std_ratio"]
    assert "metric" not in records[0]  # a ratio, not the logged activation_std
    assert records[0]["shown_in"] == "activation_std"  # where the dashboard opens
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(0, layers=[f"c{i}" for i in range(8)])
    writer.write(4, scalars={f"activation_std/c{i}": 0.1 for i in range(8)})
    writer.write_findings(4, records)
    writer.close()
    assert "! vanishing_activations from step 0: c6, c7; worst 3.7e-05 (c7)" in cli.report(
        str(tmp_path)
    )
    (group,) = json.loads(cli.report(str(tmp_path), "json"))["findings"]["initkit"]
    assert (group["worst"], group["worst_layer"]) == (3.7e-5, "c7")
    # The dashboard opened on the first metric: the finding's heatmap is activation_std's.
    from keras_initkit.dashboard import events

    run = events.read_run(str(tmp_path / "initkit"))
    metrics = ["activation_mean", "activation_std"]
    assert dashboard.finding_metrics(run.findings, metrics) == ["activation_std"]


def test_every_rule_with_a_threshold_records_which_side_is_worse():
    """Each monitor record of a rule with a threshold carries the limit its value
    crossed, below it for every lower-is-worse rule: what `group_findings` reads the
    direction from (the dashboard does not import the rule book)."""
    from types import SimpleNamespace

    from keras_initkit.callbacks.base import _record
    from keras_initkit.checks.book import default_checks
    from keras_initkit.dashboard import events

    seen = set()
    for check in default_checks():
        for rule in check.rules:
            if rule.threshold not in check.thresholds:
                continue
            record = _record(check, SimpleNamespace(name="l"), rule, 1.0, "", 0)
            bound = record["threshold"]
            # A value past the bound on the rule's side: the group's worst side.
            worse = bound / 2 if rule.below else bound * 2 + 1
            found = [{**record, "value": worse}, {**record, "layer": "m", "value": worse * 1.5}]
            run = events.Run("r", "r", ["l", "m"], {}, found, thresholds={})
            (group,) = dashboard.group_findings(run)
            assert group["worst"] == (min if rule.below else max)(worse, worse * 1.5), rule.name
            seen.add((rule.name, rule.below))
    assert {("vanishing_activations", True), ("vanishing", True)} <= seen


def test_report_trend_of_a_value_from_near_zero_is_a_factor_or_its_direction(tmp_path):
    """A relative change from a first value near 0 read "rising +6699627%"
    (bn_mean_shift 6.9e-08 → 0.0046): beyond ±1000% the trend gives the factor, or the
    direction alone where the sign changed or the first value is 0."""
    from keras_initkit import summary

    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    first = {"a": (6.9e-8, 0.0046), "b": (-1e-6, 0.5), "c": (0.0, 0.5), "d": (0.1, 0.9)}
    first |= {"e": (0.1, 0.142), "f": (-7.7e-6, -0.0594), "g": (1e-9, 0.5), "h": (0.5, 0.001)}
    first |= {"i": (0.000115, -0.0005192)}  # a signed mean across 0 read "falling -552%"
    for step, i in ((0, 0), (4, 1)):
        writer.write(step, scalars={f"bn_mean_shift/{k}": v[i] for k, v in first.items()})
    writer.close()
    rows = {
        line.split()[0]: line
        for line in cli.report(str(tmp_path), layers=True).splitlines()
        if "bn_mean_shift" in line
    }
    trends = {k: " ".join(row.split()[4:-2]) for k, row in rows.items()}
    assert trends == {
        "a": "rising ×66667",
        "b": "rising",  # across 0
        "c": "rising",  # from 0
        "d": "rising +800%",
        "e": "rising +42%",
        "f": "falling ×7714",
        "g": "rising ×5e+08",
        "h": "falling -100%",
        "i": "falling",
    }
    # The JSON keeps the relative change itself.
    data = json.loads(cli.report(str(tmp_path), "json"))["runs"]["initkit"]
    assert data["a"]["bn_mean_shift"]["change"] == pytest.approx(0.0046 / 6.9e-8 - 1)


def test_report_html_writes_one_self_contained_file(fixture_logs, tmp_path, capsys):
    log_dir, _ = fixture_logs
    out = tmp_path / "report.html"
    assert cli.main(["report", str(log_dir), "--html", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "initkit-data" in text
    assert not re.search(r"""(src|href|url)[=(]["']?(https?:)?//""", text)  # nothing to fetch


@pytest.mark.parametrize("where", ["missing/report.html", "."], ids=["no folder", "a folder"])
def test_report_html_to_a_path_it_cannot_write_exits_2(fixture_logs, tmp_path, capsys, where):
    log_dir, _ = fixture_logs
    target = tmp_path / where
    assert cli.main(["report", str(log_dir), "--html", str(target)]) == 2
    captured = capsys.readouterr()
    assert "--html needs a file path it can write" in captured.err
    assert f"Received: --html {target}" in captured.err and captured.out == ""


def test_report_names_a_corrupt_event_file_and_reports_every_good_run(tmp_path, capsys):
    """`keras-initkit report` died with a traceback on a corrupt event file (a length of
    2**40: MemoryError; a torn record: DecodeError; exit 1). It names each corrupt file
    on stderr and reports every good run, with the records of a corrupt file before its
    first corrupt one; a last record cut short (a run being written) is no warning."""
    from keras_initkit.dashboard import events, fixtures

    fixtures.write_logs(tmp_path, runs=("good", "torn", "broken", "live"), layers=3, steps=6)
    (torn,) = (tmp_path / "torn" / "initkit").iterdir()
    size, count = torn.stat().st_size, len(list(events.records(torn)))
    with open(torn, "ab") as f:  # a record of garbage after the last one
        f.write(struct.pack("<Q", 20) + bytes(4) + b"\xff" * 20 + bytes(4))
    (broken,) = (tmp_path / "broken" / "initkit").iterdir()
    broken.write_bytes(struct.pack("<Q", 2**40) + bytes(12))  # a length no writer wrote
    (live,) = (tmp_path / "live" / "initkit").iterdir()
    live.write_bytes(live.read_bytes()[:-9])  # the last record half written
    out = tmp_path / "report.html"
    assert cli.main(["report", str(tmp_path), "--html", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"keras-initkit: warning: corrupt event file {broken}: record 1, at byte 0: its length "
        "fails its checksum (a length of 1099511627776 bytes, 8 left in the file); read the 0 "
        "record(s) before it and skipped the rest of the file (as TensorBoard does)",
        f"keras-initkit: warning: corrupt event file {torn}: record {count + 1}, at byte {size}: "
        f"its length fails its checksum; read the {count} record(s) before it and skipped the "
        "rest of the file (as TensorBoard does)",
    ]
    runs = [line.split(":")[0] for line in captured.out.splitlines() if line.startswith("Run ")]
    assert runs == ["Run good/initkit", "Run live/initkit", "Run torn/initkit"]
    assert "Run torn/initkit: 3 layer(s), steps 0..25, 6 updates" in captured.out
    assert "Run live/initkit: 3 layer(s), steps 0..25, 6 updates" in captured.out
    assert {'"run":"good/initkit"', '"run":"torn/initkit"'} < set(
        re.findall(r'"run":"[^"]*"', out.read_text())
    )


def test_console_script_launcher_runs_the_report_without_keras(fixture_logs):
    log_dir, _ = fixture_logs
    root = str(Path(keras_initkit.__file__).resolve().parents[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "keras_initkit_entry", "report", str(log_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Run keras-default/initkit" in proc.stdout
    assert proc.stderr == ""  # no TensorFlow start-up messages


def test_a_run_directory_given_itself_is_named_after_its_model_run(fixture_logs):
    """`keras-initkit report LOGDIR/run/initkit` printed "Run ."."""
    log_dir, _ = fixture_logs
    text = cli.report(str(log_dir / "lsuv" / "initkit"))
    assert text.startswith("Run lsuv/initkit:"), text.splitlines()[0]

"""The initkit dashboard: TF-free event reading, the plugin's routes, the HTML report."""

import json
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from werkzeug.test import Client

import keras_initkit
from keras_initkit import summary
from keras_initkit.dashboard import events, fixtures, html, model, tfrecord

ROOT = Path(keras_initkit.__file__).resolve().parents[1]
LAYERS, STEPS = 6, 7


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("dash")
    names = fixtures.write_logs(log_dir, layers=LAYERS, steps=STEPS)
    return log_dir, names


@pytest.fixture(scope="module")
def client(logs):
    app, _ = fixtures.tensorboard_app(logs[0])
    return Client(app)


def _get(client, path):
    response = client.get(f"/data/plugin/initkit/{path}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


# -- events ---------------------------------------------------------------------------


def test_read_logdir_finds_every_run_with_order_thresholds_and_findings(logs):
    log_dir, names = logs
    runs = {run.label: run for run in events.read_logdir(log_dir)}
    assert set(runs) == {f"{name}/initkit" for name in fixtures.RUNS}
    run = runs["keras-default/initkit"]
    assert run.layers == names["keras-default"] and run.has_meta
    assert run.thresholds == fixtures.THRESHOLDS
    assert set(run.metrics) == set(fixtures.METRICS)
    steps, values = run.series["dead_fraction"]["dense_3"]
    assert steps.tolist() == [5 * k for k in range(STEPS)]
    planted = fixtures.planted_findings(0, names["keras-default"], steps)
    assert {(f["rule"], f["layer"], f["step"]) for f in run.findings} == {
        (f["rule"], f["layer"], f["step"]) for f in planted
    }
    assert runs["identity/initkit"].findings == [] and runs["identity/initkit"].has_findings


def test_forward_order_comes_from_the_meta_record_not_the_tag_order(tmp_path):
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write(0, scalars={"dead_fraction/head": 0.0, "dead_fraction/stem": 0.1})
    writer.write_meta(0, layers=["stem", "unlogged", "body", "head"], thresholds={"x": 1})
    writer.write(1, scalars={"dead_fraction/body": 0.2, "dead_fraction/head": np.nan})
    writer.write_meta(2, layers=["stem", "body", "head"])  # a later record replaces it
    writer.close()
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.layers == ["stem", "body", "head"]
    assert run.thresholds == {}
    assert list(run.series["dead_fraction"]) == ["stem", "body", "head"]
    assert np.isnan(run.series["dead_fraction"]["head"][1][1])


def test_findings_latest_list_per_source_and_non_finite_values(tmp_path):
    writer = summary.EventFileSummaryWriter(tmp_path)
    first = {"rule": "dead_fraction", "layer": "a", "step": 3, "value": 0.9, "fix": "He"}
    writer.write_findings(3, [first])
    writer.write_findings(6, [first, {**first, "layer": "b", "step": 6}])
    writer.write_findings(6, [{"rule": "exploding", "layer": "c", "value": float("nan")}], "Grad")
    writer.write(6, scalars={"gradient_norm/c": 1.0})
    writer.close()
    run = events.read_run(str(tmp_path))
    assert sorted((f["rule"], f["layer"]) for f in run.findings) == [
        ("dead_fraction", "a"),
        ("dead_fraction", "b"),
        ("exploding", "c"),
    ]
    exploding = next(f for f in run.findings if f["rule"] == "exploding")
    assert exploding["value"] == "nan"
    groups = {g["rule"]: g for g in model.group_findings(run)}
    assert groups["dead_fraction"]["first_step"] == 3 and groups["dead_fraction"]["count"] == 2
    assert groups["exploding"]["worst"] == "nan"


def test_tf1_simple_value_scalars_are_read(tmp_path):
    writer = EventFileWriter(str(tmp_path))
    for step, value in enumerate([0.1, 0.7]):
        value_pb = summary_pb2.Summary.Value(tag="dead_fraction/x", simple_value=value)
        writer.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value_pb])))
    writer.close()
    run = events.read_run(str(tmp_path))
    assert run.series["dead_fraction"]["x"][1].tolist() == pytest.approx([0.1, 0.7])
    assert not run.has_meta and run.layers == ["x"]


def test_foreign_logs_are_not_a_run(tmp_path):
    summary.EventFileSummaryWriter(tmp_path).write(0, scalars={"epoch_loss": 1.0})
    assert events.read_run(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError):
        events.find_runs(tmp_path / "missing")


# -- corrupt and truncated event files ---------------------------------------------------


def _frames(path):
    """`(offset, length)` of each record of a TFRecord file, as its length fields say."""
    data, out, offset = Path(path).read_bytes(), [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        out.append((offset, length))
        offset += 16 + length
    return out


def _tensorboards_records(path):
    """The records TensorBoard's TF-free reader reads of a file before it stops."""
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    reader, out = PyRecordReader_New(str(path)), []
    while True:
        try:
            reader.GetNext()
        except (errors.OutOfRangeError, errors.DataLossError):
            return out
        out.append(reader.record())


def _damage(path, how):
    """Damage the event file `path` as `how` says; returns the records left readable."""
    data = bytearray(Path(path).read_bytes())
    frames = _frames(path)
    offset, length = frames[2]
    if how == "huge length":  # the trial's: a length TensorBoard never wrote, no checksum
        data += struct.pack("<Q", 2**40) + bytes(12)
        keep = len(frames)
    elif how == "torn record":  # the trial's: a record of garbage after the last one
        data += struct.pack("<Q", 20) + bytes(4) + b"\xff" * 20 + bytes(4)
        keep = len(frames)
    elif how == "length bit flipped":
        data[offset] ^= 0x04
        keep = 2
    elif how == "data bit flipped":
        data[offset + 12 + length // 2] ^= 0x10
        keep = 2
    elif how == "data checksum flipped":
        data[offset + 12 + length] ^= 0x01
        keep = 2
    else:  # "cut in the header", "cut in the data", "cut in the data checksum"
        last_offset, last_length = frames[-1]
        cut = {"header": 5, "data": 12 + last_length // 2, "data checksum": 14 + last_length}
        data = data[: last_offset + cut[how.removeprefix("cut in the ")]]
        keep = len(frames) - 1
    Path(path).write_bytes(bytes(data))
    return keep


CORRUPT = ("huge length", "torn record", "length bit flipped", "data bit flipped")
CUT = ("cut in the header", "cut in the data", "cut in the data checksum")


@pytest.mark.parametrize("how", CORRUPT + ("data checksum flipped",) + CUT)
def test_a_file_is_read_up_to_its_first_corrupt_record_as_tensorboard_reads_it(tmp_path, how):
    """A corrupt event file made `keras-initkit report` die: a length of 2**40 read as
    one `f.read` (MemoryError), a torn record parsed as an Event (DecodeError); no
    checksum was verified. A corrupt record ends its file with a warning naming it; a
    last record cut short is a file still being written, read silently up to it."""
    fixtures.write_logs(tmp_path, runs=("a",), layers=3, steps=6)
    (path,) = (tmp_path / "a" / "initkit").iterdir()
    before = list(events.records(path))
    keep = _damage(path, how)
    if how in CUT:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            found = list(events.records(path))
    else:
        with pytest.warns(events.CorruptEventFileWarning, match=re.escape(str(path))) as caught:
            found = list(events.records(path))
        assert f"record {keep + 1}, at byte {_frames(path)[keep][0]}:" in str(caught[0].message)
    assert found == before[:keep] == _tensorboards_records(path)


def test_every_good_run_is_read_and_served_beside_a_corrupt_one(tmp_path):
    """A run whose only event file is corrupt from its first record is no run (it was a
    traceback); the others are read, drawn in the HTML report and served by the tab."""
    fixtures.write_logs(tmp_path, runs=("good", "torn", "broken"), layers=3, steps=6)
    (torn,) = (tmp_path / "torn" / "initkit").iterdir()
    _damage(torn, "torn record")
    (broken,) = (tmp_path / "broken" / "initkit").iterdir()
    broken.write_bytes(struct.pack("<Q", 2**40) + bytes(12))
    with pytest.warns(events.CorruptEventFileWarning) as caught:
        runs = events.read_logdir(tmp_path)
    assert sorted(str(w.message).split(":")[0] for w in caught) == [
        f"corrupt event file {broken}",
        f"corrupt event file {torn}",
    ]
    assert [run.label for run in runs] == ["good/initkit", "torn/initkit"]
    assert runs[1].steps("dead_fraction").tolist() == [5 * k for k in range(6)]
    assert [r["run"] for r in html.report_data(runs)["runs"]] == ["good/initkit", "torn/initkit"]
    served = _get(Client(fixtures.tensorboard_app(tmp_path)[0]), "runs").json["runs"]
    assert [r["run"] for r in served] == ["good/initkit", "torn/initkit"]


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 63, 64, 65, 200, 4096, 70_001])
def test_record_checksums_are_tensorboards(length):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    rng = np.random.default_rng(length)
    buffer = rng.integers(0, 256, 3 * length + 10, dtype=np.uint8)
    starts = [0, 5, length + 7]
    got = tfrecord.masked_crc32cs(buffer, starts, [length] * 3)
    assert got.tolist() == [masked_crc32c(buffer[s : s + length].tobytes()) for s in starts]


def test_reading_imports_neither_tensorflow_nor_keras(logs):
    code = (
        "import sys, keras_initkit_entry\n"
        f"assert keras_initkit_entry.main(['report', {str(logs[0])!r}]) == 0\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "keras-default" in proc.stdout and "oneDNN" not in proc.stderr


def test_tensorboard_loads_the_plugin_without_keras(logs):
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="tensorboard_plugins") if e.name == "initkit"]
    assert entry.value == "keras_initkit_entry:InitkitLoader"
    code = (
        "import sys\n"
        "from tensorboard.plugins import base_plugin\n"
        "from keras_initkit_entry import InitkitLoader\n"
        f"context = base_plugin.TBContext(logdir={str(logs[0])!r})\n"
        "plugin = InitkitLoader().load(context)\n"
        "assert plugin.plugin_name == 'initkit' and '/heatmap' in plugin.get_plugin_apps()\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
        "assert 'keras_initkit' not in sys.modules, 'the bare package stayed'\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_ranges_in_forward_order():
    layers = [f"l{i}" for i in range(8)]
    assert model.ranges(["l5", "l1", "l2", "l3", "l7", "l6"], layers) == "l1 – l3 (3), l5 – l7 (3)"
    assert model.ranges(["l0", "l2", "l3", "zz"], layers) == "l0, l2, l3, zz"


def test_a_rule_on_many_separate_layers_is_cut_short_and_listed_whole_apart():
    """ResNet50's 53 batch-norm layers, never next to each other in forward order: the
    first four runs, then a count; the group keeps every name for the table's tooltip."""
    layers = [f"{kind}{i}" for i in range(53) for kind in ("conv", "bn", "relu")]
    names = [f"bn{i}" for i in range(53)]
    assert model.ranges(names, layers) == "bn0, bn1, bn2, bn3, and 49 more"
    run = events.Run(
        label="r",
        path="r",
        layers=layers,
        series={},
        findings=[{"rule": "bn_init_weight", "layer": n, "step": 2, "value": 0.98} for n in names],
        thresholds={},
    )
    (group,) = model.group_findings(run)
    assert group["layers"] == "bn0, bn1, bn2, bn3, and 49 more" and group["count"] == 53
    assert group["names"] == names


# -- plugin routes --------------------------------------------------------------------


def test_plugin_is_listed_and_serves_its_module(client):
    listing = json.loads(client.get("/data/plugins_listing").get_data(as_text=True))
    assert listing["initkit"]["enabled"] is True
    assert listing["initkit"]["loading_mechanism"]["module_path"].endswith("/initkit/index.js")
    index = _get(client, "index.js")
    assert index.headers["Content-Type"].startswith("text/javascript")
    assert "from './app.js'" in index.get_data(as_text=True)
    assert "export function mount" in _get(client, "app.js").get_data(as_text=True)


def test_runs_route(client, logs):
    runs = {r["run"]: r for r in _get(client, "runs").json["runs"]}
    assert set(runs) == {f"{name}/initkit" for name in fixtures.RUNS}
    default = runs["keras-default/initkit"]
    assert default["layers"] == LAYERS and default["max_step"] == 5 * (STEPS - 1)
    assert default["metrics"][0] == "dead_fraction" and set(default["metrics"]) == set(
        fixtures.METRICS
    )
    assert default["findings"] > 0 and default["has_meta"]
    # The dashboard opens on the metric of the earliest finding (saturated at step 0).
    assert default["finding_metrics"] == ["saturated_fraction", "dead_fraction"]
    run = next(r for r in events.read_logdir(logs[0]) if r.label == "keras-default/initkit")
    assert model.run_summary(run)["finding_metrics"] == default["finding_metrics"]
    assert model.finding_metrics([{"metric": "gone", "step": 0}], ["dead_fraction"]) == []


def test_heatmap_route_is_layers_by_steps_in_forward_order(client, logs):
    log_dir, names = logs
    data = _get(client, "heatmap?run=keras-default/initkit&metric=dead_fraction").json
    assert data["layers"] == names["keras-default"]
    assert data["steps"] == [5 * k for k in range(STEPS)]
    assert np.asarray(data["values"]).shape == (LAYERS, STEPS)
    assert data["threshold"] == 0.5 and data["scale"] == {"kind": "linear", "domain": [0, 1]}
    run = next(r for r in events.read_logdir(log_dir) if r.label == "keras-default/initkit")
    expected = run.series["dead_fraction"]["dense_4"][1]
    assert data["values"][4] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)
    log_scale = _get(client, "heatmap?run=lsuv/initkit&metric=gradient_norm").json
    assert log_scale["scale"]["kind"] == "log" and log_scale["threshold"] is None


def test_findings_route_groups_by_rule_with_layer_ranges(client, logs):
    names = logs[1]["keras-default"]
    groups = _get(client, "findings?run=keras-default/initkit").json["findings"]
    assert [g["rule"] for g in groups] == ["saturated_fraction", "dead_fraction"]
    dead = groups[1]
    assert dead["layers"] == f"{names[LAYERS // 2]} – {names[-1]} ({LAYERS - LAYERS // 2})"
    assert dead["fix"] == fixtures.FIX_DEAD and dead["first_step"] == 10
    assert dead["worst_layer"] == names[-1]
    assert _get(client, "findings?run=lsuv/initkit").json["findings"] == []


def test_findings_route_derives_findings_for_runs_without_a_record(tmp_path):
    fixtures.write_logs(tmp_path / "meta", runs=("a",), layers=4, steps=6, findings=False)
    fixtures.write_logs(tmp_path / "bare", runs=("b",), layers=4, steps=6, meta=False)
    client = Client(fixtures.tensorboard_app(tmp_path)[0])
    derived = _get(client, "findings?run=meta/a/initkit").json
    assert derived["source"] == "derived"
    dead = next(g for g in derived["findings"] if g["rule"] == "dead_fraction")
    assert dead["layers"].startswith("dense_") and dead["first_step"] is not None
    recorded = _get(client, "findings?run=bare/b/initkit").json
    assert recorded["source"] == "recorded" and recorded["findings"]
    fixtures.write_logs(
        tmp_path / "none", runs=("c",), layers=2, steps=2, meta=False, findings=False
    )
    client = Client(fixtures.tensorboard_app(tmp_path / "none")[0])
    assert _get(client, "findings?run=c/initkit").json == {"findings": [], "source": "none"}


def test_routes_reject_missing_arguments(client):
    assert client.get("/data/plugin/initkit/heatmap?run=x").status_code == 400
    assert client.get("/data/plugin/initkit/findings").status_code == 400


def test_plugin_is_inactive_without_our_data(tmp_path):
    summary.EventFileSummaryWriter(tmp_path / "train").write(0, scalars={"epoch_loss": 1.0})
    app, plugin = fixtures.tensorboard_app(tmp_path)
    listing = json.loads(Client(app).get("/data/plugins_listing").get_data(as_text=True))
    assert listing["initkit"]["enabled"] is False and not plugin.is_active()


def test_runs_with_differing_layer_names_align_by_depth(tmp_path):
    fixtures.write_logs(tmp_path, runs=("a", "b"), layers=3, steps=2, stable_names=False)
    client = Client(fixtures.tensorboard_app(tmp_path)[0])
    a = _get(client, "heatmap?run=a/initkit&metric=dead_fraction").json
    b = _get(client, "heatmap?run=b/initkit&metric=dead_fraction").json
    assert a["layers"] == ["dense_0", "dense_1", "dense_2"]
    assert b["layers"] == ["dense_3", "dense_4", "dense_5"]  # row i = depth i in both


# -- lower-is-worse thresholds ----------------------------------------------------------


def write_gradient_run(path, meta=True):
    """One run whose `gradient_ratio` is healthy in `mid`, vanished in `early`, exploded
    in `late` (the vanishing rule's threshold is a lower one, the exploding rule's an
    upper one), and as small as `early`'s in `key`, which the vanishing rule exempts."""
    writer = summary.EventFileSummaryWriter(path)
    if meta:
        writer.write_meta(
            0,
            layers=["early", "key", "mid", "late"],
            thresholds={"gradient_ratio": 1e3},
            lower_thresholds={"gradient_ratio": 1e-3, "attention_entropy": 0.05},
            exempt={"below": {"gradient_ratio": ["key"]}},
        )
    for step, scale in ((0, 1.0), (10, 10.0)):
        writer.write(
            step,
            scalars={
                "gradient_ratio/early": 1e-5 / scale,
                "gradient_ratio/key": 1e-5 / scale,
                "gradient_ratio/mid": 0.5,
                "gradient_ratio/late": 2e3 * scale,
            },
        )
    writer.close()
    return events.read_run(str(path))


def test_lower_thresholds_are_recorded_read_flagged_and_served(tmp_path):
    run = write_gradient_run(tmp_path / "initkit")
    assert run.thresholds == {"gradient_ratio": 1e3} and run.has_thresholds
    assert run.lower_thresholds == {"gradient_ratio": 1e-3, "attention_entropy": 0.05}
    assert run.exempt == {"below": {"gradient_ratio": ["key"]}}
    flagged = model.flagger(run.thresholds, run.lower_thresholds, run.exempt)
    assert flagged("gradient_ratio", 1e-4) and flagged("gradient_ratio", 1e4)
    assert flagged("gradient_ratio", 1e-4, "early") and not flagged("gradient_ratio", 1e-4, "key")
    assert flagged("gradient_ratio", 1e4, "key")  # exempt from the lower threshold only
    assert not flagged("gradient_ratio", 0.5) and not flagged("gradient_ratio", 1e-3)
    assert flagged("attention_entropy", 0.01) and not flagged("attention_entropy", 0.9)
    assert not flagged("dead_fraction", 0.99) and flagged("dead_fraction", float("nan"))
    groups, source = model.findings(run)  # no findings record: derived from both sides
    assert source == "derived"
    by_rule = {g["rule"]: g for g in groups}
    assert set(by_rule) == {"gradient_ratio below 0.001", "gradient_ratio"}
    vanished, exploded = by_rule["gradient_ratio below 0.001"], by_rule["gradient_ratio"]
    assert vanished["layers"] == "early" and exploded["layers"] == "late"
    assert vanished["worst"] == pytest.approx(1e-6)  # the smallest: lower is worse
    assert exploded["worst"] == pytest.approx(2e4)
    client = Client(fixtures.tensorboard_app(tmp_path)[0])
    data = _get(client, "heatmap?run=initkit&metric=gradient_ratio").json
    assert data["lower"] == 1e-3 and data["threshold"] == 1e3
    assert data["layers"] == ["early", "key", "mid", "late"]
    assert data["exempt"] == {"below": [1]}
    listing = _get(client, "findings?run=initkit").json
    assert listing["source"] == "derived" and len(listing["findings"]) == 2


def test_gradient_ratio_is_on_a_log_scale_even_with_exact_zeros():
    values = np.array([[0.0, 1e-6], [0.5, 3.2]])
    assert model.scale("gradient_ratio", values) == {"kind": "log", "domain": [1e-6, 3.2]}


def test_a_worst_factor_is_on_a_linear_scale_from_one():
    """`bn_std_ratio` is never below 1: a scale from 0 spent half its colours on nothing."""
    values = np.array([[1.2, 3.0], [1.5, np.nan]])
    assert model.scale("bn_std_ratio", values) == {"kind": "linear", "domain": [1.0, 3.0]}
    assert model.scale("bn_mean_shift", values)["domain"] == [0.0, 3.0]


def test_a_run_without_lower_thresholds_reads_as_before(logs):
    run = next(r for r in events.read_logdir(logs[0]) if r.label == "lsuv/initkit")
    assert run.lower_thresholds == {}
    assert model.heatmap(run, "dead_fraction")["lower"] is None


@pytest.mark.parametrize(
    "argument, bad",
    [
        ("thresholds", {"gradient_ratio": "1e-3"}),
        ("thresholds", {"gradient_ratio": float("nan")}),
        ("thresholds", {"gradient_ratio": True}),
        ("thresholds", {1: 0.5}),
        ("thresholds", [("gradient_ratio", 1e-3)]),
        ("lower_thresholds", {"gradient_ratio": "1e-3"}),
        ("lower_thresholds", {"gradient_ratio": float("nan")}),
        ("lower_thresholds", {"gradient_ratio": True}),
        ("lower_thresholds", {1: 0.5}),
        ("lower_thresholds", [("gradient_ratio", 1e-3)]),
        ("exempt", {"sideways": {"gradient_ratio": ["a"]}}),
        ("exempt", {"below": {"gradient_ratio": "a"}}),
        ("exempt", {"below": {"gradient_ratio": [1]}}),
        ("exempt", {"below": ["gradient_ratio"]}),
        ("exempt", ["below"]),
        ("judged_from", {"bn_mean_shift": {"a": -1}}),
        ("judged_from", {"bn_mean_shift": {"a": 2.5}}),
        ("judged_from", {"bn_mean_shift": {"a": True}}),
        ("judged_from", {"bn_mean_shift": ["a"]}),
        ("judged_from", {"bn_mean_shift": {1: 3}}),
        ("judged_from", ["bn_mean_shift"]),
        ("exempt_until", {"sideways": {"gradient_ratio": {"a": 3}}}),
        ("exempt_until", {"below": {"gradient_ratio": ["a"]}}),
        ("exempt_until", {"below": {"gradient_ratio": {"a": -1}}}),
        ("exempt_until", {"below": {"gradient_ratio": {"a": 2.5}}}),
        ("exempt_until", {"below": {"gradient_ratio": 3}}),
        ("exempt_until", {"gradient_ratio": {"a": 3}}),
        ("exempt_until", ["below"]),
        ("epoch_ends", {"metrics": ["bn_mean_shift"]}),
        ("epoch_ends", {"metrics": "bn_mean_shift", "steps": [1]}),
        ("epoch_ends", {"metrics": ["bn_mean_shift"], "steps": [-1]}),
        ("epoch_ends", {"metrics": ["bn_mean_shift"], "steps": [1.5]}),
        ("epoch_ends", {"metrics": [1], "steps": [1]}),
        ("epoch_ends", {"metrics": ["a"], "steps": [1], "more": 1}),
        ("epoch_ends", ["bn_mean_shift"]),
    ],
)
def test_write_meta_rejects_bad_layer_records(tmp_path, argument, bad):
    """The thresholds and where they apply (`exempt`, `exempt_until`, `judged_from`,
    `epoch_ends`): validated, and nothing is written."""
    writer = summary.EventFileSummaryWriter(tmp_path)
    with pytest.raises(ValueError, match=f"Argument `{argument}` must be"):
        writer.write_meta(0, layers=["a"], **{argument: bad})
    writer.close()
    assert events.read_run(str(tmp_path)) is None


def test_epoch_end_metrics_are_findings_only_at_the_ends_of_epochs(tmp_path):
    """The batch-norm rules judge at the end of an epoch only: a value logged inside an
    epoch above the threshold (bn_init_weight = 1 at step 0) is not a finding."""
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(
        0,
        layers=["bn"],
        thresholds={"bn_init_weight": 0.05, "dead_fraction": 0.5},
        epoch_ends={"metrics": ["bn_init_weight"], "steps": [8, 16]},
    )
    for step, value in ((0, 1.0), (4, 0.96), (8, 0.92), (12, 0.89), (16, 0.85)):
        writer.write(step, scalars={"bn_init_weight/bn": value, "dead_fraction/bn": 0.9})
    writer.close()
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.epoch_ends == {"metrics": ["bn_init_weight"], "steps": [8, 16]}
    flagged = model.flagger(run.thresholds, epoch_ends=run.epoch_ends)
    found = {
        (f["rule"], f["step"], round(f["value"], 4)) for f in model.derived_findings(run, flagged)
    }
    assert found == {("bn_init_weight", 8, 0.92), ("dead_fraction", 0, 0.9)}
    assert model.heatmap(run, "bn_init_weight")["epoch_end_steps"] == [8, 16]
    assert model.heatmap(run, "dead_fraction")["epoch_end_steps"] is None


def test_values_before_the_step_a_rule_judges_from_are_not_findings(tmp_path):
    """Derived findings, `!` marks and the heatmap leave out values logged before the
    step the rule judges a layer from (batch norm's mismatch, while the initial moving
    statistics still weigh); later values are judged."""
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(
        0,
        layers=["bn", "other"],
        thresholds={"bn_mean_shift": 0.5},
        judged_from={"bn_mean_shift": {"bn": 10}},
    )
    for step, value in ((0, 2.0), (5, 3.0), (10, 1.5), (15, 0.1)):
        writer.write(step, scalars={"bn_mean_shift/bn": value, "bn_mean_shift/other": value})
    writer.close()
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.judged_from == {"bn_mean_shift": {"bn": 10}}
    flagged = model.flagger(run.thresholds, judged_from=run.judged_from)
    found = {(f["layer"], f["step"], f["value"]) for f in model.derived_findings(run, flagged)}
    assert found == {("bn", 10, 1.5), ("other", 0, 3.0)}
    assert model.findings(run)[1] == "derived"
    assert _get(
        Client(fixtures.tensorboard_app(tmp_path)[0]), "heatmap?run=initkit&metric=bn_mean_shift"
    ).json["judged_from"] == [10, 0]


def test_a_layer_that_left_an_exemption_is_judged_on_that_side_from_then_on(tmp_path):
    """A residual branch left the vanishing rule's exemption at step 10: its small
    ratios before step 10 are not findings, later ones are; its exploding side was
    never exempt, so a ratio above the upper threshold at step 5 is one."""
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(
        0,
        layers=["branch", "other"],
        thresholds={"gradient_ratio": 1e3},
        lower_thresholds={"gradient_ratio": 1e-3},
        exempt_until={"below": {"gradient_ratio": {"branch": 10}}},
    )
    for step, value in ((0, 1e-5), (5, 2e3), (10, 1e-4), (15, 0.5)):
        writer.write(step, scalars={"gradient_ratio/branch": value, "gradient_ratio/other": 0.5})
    writer.close()
    run = events.read_run(str(tmp_path / "initkit"))
    assert run.exempt_until == {"below": {"gradient_ratio": {"branch": 10}}}
    flagged = model.run_flagger(run)
    assert not flagged("gradient_ratio", 1e-5, "branch", 0)
    assert flagged("gradient_ratio", 2e3, "branch", 5)  # the upper side: judged
    assert flagged("gradient_ratio", 1e-4, "branch", 10)
    assert flagged("gradient_ratio", 1e-5, "other", 0)
    found = [(f["layer"], f["step"]) for f in model.derived_findings(run, flagged)]
    assert found == [("branch", 5)]  # not from step 0
    data = _get(
        Client(fixtures.tensorboard_app(tmp_path)[0]), "heatmap?run=initkit&metric=gradient_ratio"
    ).json
    assert data["exempt_until"] == {"below": [10, 0]}
    assert model.heatmap(run, "dead_fraction")["exempt_until"] == {}


def test_the_worst_of_a_finding_is_the_worst_judged_value_not_its_first(tmp_path):
    """A finding is recorded at its first detection (2.64 at step 4); the layer got
    worse (3.04 at step 8, an epoch end the rule judges at): the findings said worst
    2.64 while the heatmap and `report --layers` marked 3.04. A larger value the rule
    does not judge (step 6, inside an epoch) is not the worst."""
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(
        0,
        layers=["a", "top"],
        thresholds={"bn_std_ratio": 2.0},
        epoch_ends={"metrics": ["bn_std_ratio"], "steps": [4, 8]},
    )
    for step, top in ((4, 2.64), (6, 9.0), (8, 3.04)):
        writer.write(step, scalars={"bn_std_ratio/a": 2.8, "bn_std_ratio/top": top})
    record = {"rule": "bn_std_ratio", "step": 4, "metric": "bn_std_ratio", "threshold": 2.0}
    writer.write_findings(
        4, [{**record, "layer": "a", "value": 2.8}, {**record, "layer": "top", "value": 2.64}]
    )
    writer.close()
    (group,) = model.group_findings(events.read_run(str(tmp_path / "initkit")))
    assert (group["worst"], group["worst_layer"]) == (pytest.approx(3.04), "top")


# -- HTML report ----------------------------------------------------------------------


def test_html_report_is_self_contained(logs, tmp_path):
    runs = events.read_logdir(logs[0])
    path = html.write(runs, tmp_path / "report.html", title="t </script>")
    text = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "fetch(" not in text.split("function httpSource")[0]  # the inline source never fetches
    payload = re.search(
        r'<script type="application/json" id="initkit-data">(.*?)</script>', text, re.S
    ).group(1)
    data = json.loads(payload)
    assert [r["run"] for r in data["runs"]] == [r.label for r in runs]
    heat = data["heatmaps"]["keras-default/initkit"]["dead_fraction"]
    assert np.asarray(heat["values"]).shape == (LAYERS, STEPS)
    assert data["findings"]["keras-default/initkit"][0]["rule"] == "saturated_fraction"
    assert "t &lt;/script&gt;" in text and "export function mount" in text


def test_the_worst_of_a_lower_is_worse_rule_is_its_smallest_value():
    """A group of a lower-is-worse rule (its findings lie below their `threshold`) has
    its smallest value as the worst, also where a record carries no threshold (a
    custom writer's, or an older record); a higher-is-worse rule's stays its largest."""
    found = [
        {"rule": "vanishing_activations", "layer": "c7", "step": 0, "value": 3.7e-5},
        {"rule": "vanishing_activations", "layer": "c6", "step": 4, "value": 8.6e-4},
        {"rule": "vanishing_activations", "layer": "c5", "step": 4, "value": 2e-3},
        {"rule": "dead_fraction", "layer": "c6", "step": 4, "value": 0.75, "threshold": 0.5},
        {"rule": "dead_fraction", "layer": "c7", "step": 4, "value": 0.875},
    ]
    found[1]["threshold"] = found[2]["threshold"] = 0.01
    layers = [f"c{i}" for i in range(8)]
    run = events.Run("r", "r", layers, {}, found, thresholds={})
    groups = {g["rule"]: g for g in model.group_findings(run)}
    vanishing = groups["vanishing_activations"]
    assert (vanishing["worst"], vanishing["worst_layer"]) == (3.7e-5, "c7")
    dead = groups["dead_fraction"]
    assert (dead["worst"], dead["worst_layer"]) == (0.875, "c7")
    # Without any threshold, the direction is unknown: the largest, as before.
    run.findings = [{k: v for k, v in f.items() if k != "threshold"} for f in found]
    groups = {g["rule"]: g for g in model.group_findings(run)}
    assert groups["vanishing_activations"]["worst"] == 2e-3


def test_a_range_is_broken_only_by_a_layer_measured_for_the_rule():
    """With the rule's metric logged, a run of findings spans the layers between that
    the metric does not describe: ResNet-like conv/bn/relu triples read "bn0 – bn52
    (53)". A layer measured for it and not found still breaks the run."""
    layers = [f"{kind}{i}" for i in range(53) for kind in ("conv", "bn", "relu")]
    names = [f"bn{i}" for i in range(53) if i != 30]
    series = {"bn_init_weight": {f"bn{i}": ([0], [0.9]) for i in range(53)}}
    record = {"rule": "bn_init_weight", "step": 2, "value": 0.98, "metric": "bn_init_weight"}
    run = events.Run(
        label="r",
        path="r",
        layers=layers,
        series=series,
        findings=[{**record, "layer": n} for n in names],
        thresholds={},
    )
    (group,) = model.group_findings(run)
    assert group["layers"] == "bn0 – bn29 (30), bn31 – bn52 (22)"
    assert group["names"] == names and group["count"] == 52
    # Without the metric's series (older logs), every other layer breaks it, as before.
    run.series = {}
    (group,) = model.group_findings(run)
    assert group["layers"] == "bn0, bn1, bn2, bn3, and 48 more"


def test_the_plugin_gives_the_same_ranges_as_the_files(tmp_path):
    """The plugin's findings route read a run without its series, so its ranges broke at
    every layer ("bn0, bn1, bn2, bn3, and 48 more") where `keras-initkit report` and the
    HTML file, reading the files, print "bn0 – bn29 (30), bn31 – bn52 (22)"."""
    layers = [f"{kind}{i}" for i in range(53) for kind in ("conv", "bn", "relu")]
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(0, layers=layers, thresholds={"dead_fraction": 0.5})
    writer.write(2, scalars={f"bn_init_weight/bn{i}": 0.9 for i in range(53)})
    writer.write(2, scalars={f"dead_fraction/relu{i}": 0.1 for i in range(53)})
    record = {"rule": "bn_init_weight", "step": 2, "value": 0.9, "metric": "bn_init_weight"}
    writer.write_findings(2, [{**record, "layer": f"bn{i}"} for i in range(53) if i != 30])
    writer.close()
    expected = model.findings(events.read_run(str(tmp_path / "initkit")))[0]
    assert expected[0]["layers"] == "bn0 – bn29 (30), bn31 – bn52 (22)"
    served = _get(Client(fixtures.tensorboard_app(tmp_path)[0]), "findings?run=initkit").json
    assert served == {"findings": json.loads(model.dumps(expected)), "source": "recorded"}


def test_a_diverged_layer_is_sent_as_nan_or_inf_not_as_absent(tmp_path):
    """The heatmap route sent NaN and inf as null, the mark of a value not logged: a
    diverged layer looked grey ("not logged") in the dashboard."""
    writer = summary.EventFileSummaryWriter(tmp_path / "initkit")
    writer.write_meta(0, layers=["a", "b"], thresholds={"gradient_norm": 1e3})
    writer.write(0, scalars={"gradient_norm/a": 1.0, "gradient_norm/b": 2.0})
    writer.write(5, scalars={"gradient_norm/a": float("nan"), "gradient_norm/b": float("inf")})
    writer.write(7, scalars={"gradient_norm/a": float("-inf")})  # b not logged at step 7
    writer.close()
    data = _get(
        Client(fixtures.tensorboard_app(tmp_path)[0]), "heatmap?run=initkit&metric=gradient_norm"
    ).json
    assert data["values"] == [[1.0, "nan", "-inf"], [2.0, "inf", None]]
    assert data["scale"]["domain"] == [1.0, 2.0]  # finite values only
    assert json.loads(model.dumps({"x": float("nan"), "y": 0.5})) == {"x": "nan", "y": 0.5}

"""summary.py: both event writers write the same, readable files; record_if cannot drop them."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from keras_initkit import summary

# The TensorFlow writer is compared with the event-file one: TensorFlow envs only (the
# jax and torch envs have none; test_backends covers the event-file writer there).
tf = pytest.importorskip("tensorflow")

WRITERS = [summary.TFSummaryWriter, summary.EventFileSummaryWriter]


def _write_three_updates(writer):
    for step in (0, 5, 10):
        writer.write(step, scalars={"saturated_fraction/a": step / 10, "saturated_fraction/b": 0.5})
    writer.write(10, histograms={"activations/a": np.linspace(-1, 1, 101)})
    writer.write(10, layout={"Saturation": ["saturated_fraction", "abs_p98"]})
    writer.close()


def _read(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("cls", WRITERS)
def test_writers_write_scalars_histograms_and_layout(tmp_path, cls):
    writer = cls(summary.run_dir(tmp_path))
    assert not (tmp_path / "initkit").exists()  # created lazily, on the first write
    _write_three_updates(writer)
    acc = _read(tmp_path / "initkit")
    series = [(e.step, e.tensor_proto.float_val[0]) for e in acc.Tensors("saturated_fraction/a")]
    assert series == [(0, 0.0), (5, pytest.approx(0.5)), (10, pytest.approx(1.0))]
    assert [e.tensor_proto.float_val[0] for e in acc.Tensors("saturated_fraction/b")] == [0.5] * 3
    assert acc.SummaryMetadata("saturated_fraction/a").plugin_data.plugin_name == "scalars"
    (histogram,) = acc.Tensors("activations/a")
    buckets = tf.make_ndarray(histogram.tensor_proto)
    assert buckets.shape == (summary.HISTOGRAM_BUCKETS, 3) and buckets[:, 2].sum() == 101
    assert acc.SummaryMetadata("activations/a").plugin_data.plugin_name == "histograms"
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    (category,) = layout.category
    assert category.title == "Saturation"
    assert [(c.title, list(c.multiline.tag)) for c in category.chart] == [
        ("saturated_fraction", ["^saturated_fraction/"]),
        ("abs_p98", ["^abs_p98/"]),
    ]


def test_both_writers_write_identical_summaries(tmp_path):
    read = []
    for cls in WRITERS:
        root = tmp_path / cls.__name__
        _write_three_updates(cls(summary.run_dir(root)))
        acc = _read(root / "initkit")
        tags = acc.Tags()["tensors"]
        read.append(
            {
                t: [(e.step, e.tensor_proto.SerializeToString()) for e in acc.Tensors(t)]
                for t in tags
            }
        )
    assert read[0] == read[1]


def test_tf_writer_records_inside_record_if_false(tmp_path):
    writer = summary.TFSummaryWriter(tmp_path)
    with tf.summary.record_if(False):
        writer.write(3, scalars={"dead_fraction/a": 1.0})
    writer.close()
    assert [e.step for e in _read(tmp_path).Tensors("dead_fraction/a")] == [3]


def test_check_log_dir(tmp_path):
    assert summary.check_log_dir(None) is None
    assert summary.check_log_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="Received: log_dir=.* is a file"):
        summary.check_log_dir(tmp_path / "file" / "logs")
    with pytest.raises(ValueError, match="Received: log_dir=.* is a file"):
        summary.check_log_dir(tmp_path / "file")
    with pytest.raises(ValueError, match=r"Received: log_dir=\['x'\]"):
        summary.check_log_dir(["x"])


@pytest.mark.parametrize("cls", WRITERS)
def test_meta_and_findings_records(tmp_path, cls):
    writer = cls(summary.run_dir(tmp_path))
    writer.write_meta(0, layers=["stem", "body", "head"], thresholds={"dead_fraction": 0.5})
    found = [
        {"rule": "dead_fraction", "layer": "body", "step": 4, "value": 0.75, "fix": "He", "x": 1},
        {"rule": "exploding", "layer": "head", "step": 4, "value": float("inf"), "message": "m"},
    ]
    writer.write_findings(4, found)
    writer.write_findings(4, found[:1], source="DeadUnitMonitor")
    writer.close()
    acc = _read(tmp_path / "initkit")
    assert set(acc.Tags()["tensors"]) == {
        summary.LAYERS_TAG,
        summary.FINDINGS_TAG,
        summary.FINDINGS_TAG + "/DeadUnitMonitor",
    }
    for tag in acc.Tags()["tensors"]:
        assert acc.SummaryMetadata(tag).plugin_data.plugin_name == "initkit"
    (meta,) = acc.Tensors(summary.LAYERS_TAG)
    assert json.loads(meta.tensor_proto.string_val[0]) == {
        "layers": ["stem", "body", "head"],
        "thresholds": {"dead_fraction": 0.5},
    }
    (record,) = acc.Tensors(summary.FINDINGS_TAG)
    assert record.step == 4
    assert json.loads(record.tensor_proto.string_val[0])["findings"] == [
        {"rule": "dead_fraction", "layer": "body", "step": 4, "value": 0.75, "fix": "He"},
        {"rule": "exploding", "layer": "head", "step": 4, "value": "inf", "message": "m"},
    ]


def test_findings_accept_dataclasses_and_reject_others(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class Finding:
        step: int
        layer: str
        rule: str
        message: str

    writer = summary.EventFileSummaryWriter(tmp_path)
    writer.write_findings(1, [Finding(1, "a", "dead_fraction", "dead")])
    with pytest.raises(ValueError, match="Received: "):
        writer.write_findings(1, [{"layer": "a"}])
    with pytest.raises(ValueError, match="Received: layers='ab'"):
        writer.write_meta(1, layers="ab")
    writer.close()
    (record,) = _read(tmp_path).Tensors(summary.FINDINGS_TAG)
    assert json.loads(record.tensor_proto.string_val[0])["findings"] == [
        {"rule": "dead_fraction", "layer": "a", "step": 1, "message": "dead"}
    ]

"""TensorBoard writing for the monitors: our own run, explicit steps, one write per update.

Every update of a monitor becomes ONE `Summary` protocol buffer holding all its scalars
(and histograms), built on the host from the `tensorboard` package's protos and
appended to the event file of `<log_dir>/initkit` in one call:

- `TFSummaryWriter` (TensorFlow backend): `tf.summary.create_file_writer`, the write
  inside `tf.summary.record_if(True)` with an explicit `step=`, so the `record_if`
  gating that `keras.callbacks.TensorBoard` installs around train batches cannot drop
  our values. TensorFlow is imported lazily, the file writer is created lazily.
- `EventFileSummaryWriter` (JAX, torch, or wherever TensorFlow is absent): the same
  protos through the `tensorboard` package's own `EventFileWriter`.

Both write identical event files: scalars as the scalars plugin's float32 tensors,
histograms as the histogram plugin's `(buckets, 3)` tensors, and a Custom Scalars
layout (one chart per metric, every layer of that metric on it).

Two records for the `initkit` dashboard (`keras_initkit.dashboard`) go into the same run,
as string tensors holding JSON under the plugin name `initkit` (stock TensorBoard's
Scalars and Time Series ignore them):

- `initkit/layers` (`SummaryWriter.write_meta`): the layers in forward order, and the
  thresholds the rules flag each metric's values above (`thresholds`) or below
  (`lower_thresholds`: vanishing gradients, attention collapse);
- `initkit/findings` (`SummaryWriter.write_findings`): the findings so far, one dict each.
"""

import dataclasses
import json
import os
import time

import numpy as np
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata

from keras_initkit import validation

RUN_NAME = "initkit"
PLUGIN_NAME = "initkit"  # the dashboard's plugin name: the meta records are its data
LAYERS_TAG = "initkit/layers"
FINDINGS_TAG = "initkit/findings"
FINDING_KEYS = (
    "rule",
    "layer",
    "step",
    "value",
    "message",
    "fix",
    "kind",
    "metric",
    "threshold",
    "shown_in",
)
HISTOGRAM_BUCKETS = 30
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)


def run_dir(log_dir, run=RUN_NAME):
    """The directory a run's event files go to: `<log_dir>/initkit` for the monitors."""
    return os.path.join(os.fspath(log_dir), run)


def check_log_dir(log_dir, argument="log_dir"):
    """Raise `ValueError` unless `log_dir` is None or a path we could create and write.

    Nothing is created: the nearest existing ancestor must be a writable directory.
    """
    if validation.path_or_none(log_dir, argument) is None:
        return None
    path = os.path.abspath(os.fspath(log_dir))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(
            f"Argument `{argument}` must be a directory path that can be created. "
            f"Received: {argument}={os.fspath(log_dir)!r} (but {probe!r} is a file, "
            "not a directory)"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(
            f"Argument `{argument}` must be a writable directory path. "
            f"Received: {argument}={os.fspath(log_dir)!r} ({probe!r} is not writable)"
        )
    return os.fspath(log_dir)


def scalars_summary(scalars):
    """One `Summary` proto holding float32 scalars, `{tag: value}`."""
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
        summary.value.add(
            tag=tag,
            metadata=_SCALAR_METADATA,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                float_val=[value],
            ),
        )
    return summary


def histograms_summary(histograms, buckets=HISTOGRAM_BUCKETS):
    """One `Summary` proto holding histograms, `{tag: values}`."""
    summary = summary_pb2.Summary()
    for tag, values in histograms.items():
        finite = np.asarray(values, dtype=np.float64).ravel()
        summary.MergeFrom(histogram_summary.histogram_pb(tag, finite[np.isfinite(finite)], buckets))
    return summary


def layout_summary(categories):
    """A Custom Scalars layout: per category, one multiline chart per metric.

    `categories` maps a category title to metric names; each chart collects every
    tag matching `^<metric>/`, i.e. that metric for all layers.
    """
    layout = layout_pb2.Layout(
        category=[
            layout_pb2.Category(
                title=title,
                chart=[
                    layout_pb2.Chart(
                        title=metric,
                        multiline=layout_pb2.MultilineChartContent(tag=[f"^{metric}/"]),
                    )
                    for metric in metrics
                ],
            )
            for title, metrics in categories.items()
            if metrics
        ]
    )
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
        metadata=custom_scalar_metadata.create_summary_metadata(),
        tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[layout.SerializeToString()],
        ),
    )
    return summary


def json_summary(tag, payload):
    """One `Summary` proto holding `payload` as a JSON string tensor of the `initkit` plugin.

    Non-finite floats are written as the strings `"nan"`, `"inf"` and `"-inf"` (JSON has
    no literal for them).
    """
    text = json.dumps(_finite(payload), allow_nan=False, separators=(",", ":"))
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=PLUGIN_NAME, content=b'{"version":1}'
            ),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        ),
        tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[text.encode("utf-8")],
        ),
    )
    return summary


def _finite(value):
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.generic, float)) and not isinstance(value, (bool, np.bool_)):
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, float) and not np.isfinite(value):
            return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return value


def meta_summary(
    layers,
    thresholds=None,
    lower_thresholds=None,
    exempt=None,
    judged_from=None,
    epoch_ends=None,
    exempt_until=None,
):
    """The `initkit/layers` record: layer names in forward order and metric thresholds."""
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise ValueError(
            "Argument `layers` must be a list of layer names (str) in forward order. "
            f"Received: layers={layers!r}"
        )
    payload = {"layers": list(layers)}
    for key, value in (("thresholds", thresholds), ("lower_thresholds", lower_thresholds)):
        if value := validation.metric_thresholds(value, key):
            payload[key] = value
    if exempt := validation.exempt_layers(exempt, "exempt"):
        payload["exempt"] = exempt
    if exempt_until := validation.exempt_until(exempt_until, "exempt_until"):
        payload["exempt_until"] = exempt_until
    if judged_from := validation.judged_from(judged_from, "judged_from"):
        payload["judged_from"] = judged_from
    if epoch_ends := validation.epoch_ends(epoch_ends, "epoch_ends"):
        payload["epoch_ends"] = epoch_ends
    return json_summary(LAYERS_TAG, payload)


def findings_summary(findings, source=None):
    """The `initkit/findings` record (`initkit/findings/<source>` with a `source`)."""
    records = []
    for finding in findings:
        record = finding.to_dict() if hasattr(finding, "to_dict") else finding
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            record = dataclasses.asdict(record)
        if not isinstance(record, dict) or not {"rule", "layer"} <= set(record):
            raise ValueError(
                "Argument `findings` must hold dicts with at least the keys 'rule' and "
                f"'layer' (and 'step', 'value', 'message', 'fix'). Received: {finding!r}"
            )
        records.append({key: record[key] for key in FINDING_KEYS if key in record})
    tag = FINDINGS_TAG if source is None else f"{FINDINGS_TAG}/{source}"
    return json_summary(tag, {"findings": records})


class SummaryWriter:
    """Appends `Summary` protos at explicit steps to the event files of one directory.

    Subclasses implement `_open` (create the underlying writer), `_append`,
    `_flush` and `_close`. The directory and the file are created on the first write.

    Args:
        logdir: the directory the event files go to (the run directory).
    """

    def __init__(self, logdir):
        self.logdir = os.fspath(logdir)
        self._writer = None
        self._template = (None, None)  # (tags, Summary): scalars of the last write

    @property
    def opened(self):
        return self._writer is not None

    def write(self, step, scalars=None, histograms=None, layout=None):
        """Write `{tag: float}` scalars, `{tag: values}` histograms and/or a layout
        (`{category: [metric, ...]}`) at the integer `step`."""
        parts = [
            part
            for part in (
                self._scalars(scalars) if scalars else None,
                histograms_summary(histograms) if histograms else None,
                layout_summary(layout) if layout else None,
            )
            if part is not None
        ]
        if not parts:
            return
        summary = parts[0]
        if len(parts) > 1:
            summary = summary_pb2.Summary()
            for part in parts:
                summary.MergeFrom(part)
        self._write(step, summary)

    def write_meta(
        self,
        step,
        layers,
        thresholds=None,
        lower_thresholds=None,
        exempt=None,
        judged_from=None,
        epoch_ends=None,
        exempt_until=None,
    ):
        """Record the layers' forward order (and thresholds) for the `initkit` dashboard.

        The dashboard and `keras-initkit report` draw one row per layer in this order
        (layers missing from it follow, in the order their tags first appear) and mark
        each metric's threshold on its colour scale. Call it once per fit, at train
        begin; a later call replaces an earlier one.

        Args:
            step: the integer training step.
            layers: the layer names, exactly as in the `<metric>/<layer>` tags, in
                forward order: every layer of the model, watched or not.
            thresholds: optional `{metric: value}`: values above `value` are findings,
                e.g. `{"dead_fraction": 0.5, "saturated_fraction": 0.2}`.
            lower_thresholds: optional `{metric: value}`: values below `value` are
                findings, e.g. `{"gradient_ratio": 1e-3, "attention_entropy": 0.05}`.
                A metric may have both.
            exempt: optional `{"above" or "below": {metric: [layer names]}}`: layers
                whose values of `metric` the rule behind that threshold does not judge
                (`gradient_ratio` below 1e-3 in attention's query and key projections,
                expected while the attention is near uniform).
            exempt_until: optional `{"above" or "below": {metric: {layer name:
                step}}}`: layers that left such an exemption at `step` (a residual
                branch whose scale grew past 0.1): their values on that side of the
                threshold logged before `step` are not judged, later ones are.
            judged_from: optional `{metric: {layer name: step}}`: values of `metric`
                logged before `step` in that layer are not judged (a batch-norm
                layer's `bn_mean_shift` while its initial moving statistics still
                weigh more than `bn_init_weight`'s threshold).
            epoch_ends: optional `{"metrics": [metric], "steps": [step]}`: the values
                of these metrics are judged only at these steps, the ends of epochs
                (the batch-norm rules); other values of theirs are not findings.
        """
        meta = meta_summary(
            layers, thresholds, lower_thresholds, exempt, judged_from, epoch_ends, exempt_until
        )
        self._write(step, meta)

    def write_findings(self, step, findings, source=None):
        """Record the run's findings for the `initkit` dashboard and `keras-initkit report`.

        Each call holds the complete list so far and replaces the previous call's list
        (TensorBoard keeps only a sample of a tag's older records, but always the
        latest): call it with every finding whenever new ones arrive, e.g. at each
        epoch end and at train end.

        Args:
            step: the integer training step.
            findings: dicts (or objects with `to_dict()`, or dataclasses) with the keys
                `rule` (e.g. `"dead_fraction"`), `layer` (as in the tags), `step` (when
                it first fired), `value` (the measured value), `message` (the
                observation) and `fix`; optionally `kind` (`Finding.kind`), `metric`
                (the logged metric `value` is of) and `threshold` (the limit it
                crossed; a value below it marks a lower-is-worse rule). Missing keys are
                left out; others are dropped. `keras_initkit.checks.Finding.to_dict()`
                fits as it is (it has no `fix`: add the rule's fix to show one).
            source: optional name of the writer (e.g. the monitor's class name) when
                several monitors write findings into one run: each source keeps its own
                latest list (tag `initkit/findings/<source>`), the dashboard shows all.
        """
        self._write(step, findings_summary(findings, source))

    def _write(self, step, summary):
        if self._writer is None:
            os.makedirs(self.logdir, exist_ok=True)
            self._writer = self._open()
        self._append(int(step), summary)

    def _scalars(self, scalars):
        # Monitors write the same tags at every update: refill the last proto's values
        # instead of building a new one (a few µs instead of ~20 µs per scalar).
        tags, template = self._template
        if tags != tuple(scalars):
            template = scalars_summary(scalars)
            self._template = (tuple(scalars), template)
        else:
            for value, number in zip(template.value, scalars.values()):
                value.tensor.float_val[0] = number
        return template

    def flush(self):
        if self._writer is not None:
            self._flush()

    def close(self):
        if self._writer is not None:
            self._close()
            self._writer = None

    def _open(self):
        raise NotImplementedError

    def _append(self, step, summary):
        raise NotImplementedError

    def _flush(self):
        raise NotImplementedError

    def _close(self):
        raise NotImplementedError


class TFSummaryWriter(SummaryWriter):
    """`tf.summary` file writer; every write in `record_if(True)` with `step=`.

    Serialized updates are queued and written `queue_size` at a time (and on every
    `flush`), because leaving `writer.as_default()` flushes the file: with
    `update_freq=1` a flush per batch would cost more than the rest of the write.
    """

    queue_size = 32

    def _open(self):
        import tensorflow as tf  # lazily: only the TensorFlow writer needs it

        self._tf = tf
        self._pending = []
        return tf.summary.create_file_writer(self.logdir)

    def _append(self, step, summary):
        self._pending.append((step, summary.SerializeToString()))
        if len(self._pending) >= self.queue_size:
            self._drain()

    def _drain(self):
        if not self._pending:
            return
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            for step, data in self._pending:
                tf.summary.experimental.write_raw_pb(data, step=step)
        self._pending = []

    def _flush(self):
        self._drain()
        self._writer.flush()

    def _close(self):
        self._drain()
        self._writer.close()


class EventFileSummaryWriter(SummaryWriter):
    """The `tensorboard` package's own event writer: no TensorFlow needed."""

    def _open(self):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        return EventFileWriter(self.logdir)

    def _append(self, step, summary):
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _flush(self):
        self._writer.flush()

    def _close(self):
        self._writer.close()


def is_chief(tf_config=None):
    """Whether this process writes summaries in a multi-worker job.

    Multi-worker `tf.distribute` jobs describe the cluster in the `TF_CONFIG` environment
    variable (read when `tf_config` is None). The chief writes: the task of type
    `"chief"`, or worker 0 when the cluster has no chief. Without `TF_CONFIG`, or without
    a `task` in it, the process is alone and writes.
    """
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG", "")
    config = json.loads(tf_config) if isinstance(tf_config, str) and tf_config else {}
    task = (config or {}).get("task") or {}
    if not task:
        return True
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in (config.get("cluster") or {})


def create_writer(log_dir, run=RUN_NAME):
    """The writer for `<log_dir>/<run>` that fits the running Keras backend."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return TFSummaryWriter(run_dir(log_dir, run))
    return EventFileSummaryWriter(run_dir(log_dir, run))

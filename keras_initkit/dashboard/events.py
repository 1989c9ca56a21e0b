"""Read keras_initkit runs from event files, without TensorFlow.

A run is a directory holding event files with `<metric>/<layer>` scalar tags (the
monitors write `<log_dir>/initkit`), plus the dashboard's two JSON records
(`keras_initkit.summary.LAYERS_TAG`, `FINDINGS_TAG`). Records are read with the
TFRecord framing TensorBoard's event files use and parsed with the `tensorboard`
package's own protos; TF1-style `simple_value` scalars are migrated with
`tensorboard.data_compat` as TensorBoard does. TensorBoard's own loader
(`EventAccumulator`) imports TensorFlow when it is installed (its `tensorboard.compat.tf`
falls back to a stub only without it), and the stub's reader computes CRC-32C in pure
Python: reading the framing directly (`keras_initkit.dashboard.tfrecord`, checksums
verified) keeps `keras-initkit report` free of TensorFlow and fast (a 160,000-value run
in well under a second). A corrupt event file is read as TensorBoard reads it: up to its
first corrupt record, with a `CorruptEventFileWarning` naming it.
"""

import dataclasses
import json
import math
import os
import warnings

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from keras_initkit.dashboard import tfrecord

RUN_NAME = "initkit"  # keras_initkit.summary.RUN_NAME (summary imports writer modules)
PLUGIN_NAME = "initkit"
LAYERS_TAG = "initkit/layers"
FINDINGS_TAG = "initkit/findings"
EVENT_FILE_PREFIX = "events.out.tfevents."
# The DESIGN metric names: a run holding none of them (and no meta record) is not ours.
METRICS = (
    "activation_mean",
    "activation_std",
    "saturated_fraction",
    "dead_fraction",
    "inactive_fraction",
    "bn_mean_shift",
    "bn_std_ratio",
    "gradient_norm",
    "update_ratio",
    "gate_saturated_fraction",
    "recurrent_spectral_radius",
    "attention_entropy",
)


@dataclasses.dataclass
class Run:
    """What one run's event files hold.

    Attributes:
        label: the run's name: its path relative to the log directory read.
        path: the run directory.
        layers: layer names in forward order (the `initkit/layers` record, then layers it
            does not list in the order their tags first appear).
        series: `{metric: {layer: (steps, values)}}`, int64 and float64 arrays sorted by
            step (a step written twice keeps its last value).
        findings: the findings records (dicts), the latest list of each source.
        thresholds: `{metric: value}` from the `initkit/layers` record (may be empty):
            values above it are beyond a rule's threshold.
        lower_thresholds: the same for lower-is-worse rules: values below it.
        exempt: `{"above"|"below": {metric: [layer]}}`: layers whose values of `metric`
            the rule behind that threshold does not judge.
        exempt_until: `{"above"|"below": {metric: {layer: step}}}`: layers that left
            such an exemption at `step`: their values of `metric` on that side of the
            threshold logged before `step` are not judged.
        judged_from: `{metric: {layer: step}}`: values of `metric` logged in `layer`
            before `step` are not judged (the batch-norm mismatch rules wait while the
            initial moving statistics weigh more than `bn_init_weight`'s threshold).
        epoch_ends: `{"metrics": [metric], "steps": [step]}`: those metrics' values
            are judged only at those steps, the ends of epochs (`{}`: every step).
        has_meta: whether the run holds an `initkit/layers` record.
        has_findings: whether the run holds an `initkit/findings` record (an empty list
            included).
    """

    label: str
    path: str
    layers: list
    series: dict
    findings: list
    thresholds: dict
    has_meta: bool = False
    has_findings: bool = False
    lower_thresholds: dict = dataclasses.field(default_factory=dict)
    exempt: dict = dataclasses.field(default_factory=dict)
    exempt_until: dict = dataclasses.field(default_factory=dict)
    judged_from: dict = dataclasses.field(default_factory=dict)
    epoch_ends: dict = dataclasses.field(default_factory=dict)

    @property
    def has_thresholds(self):
        return bool(self.thresholds or self.lower_thresholds)

    @property
    def metrics(self):
        return list(self.series)

    def steps(self, metric):
        """The sorted union of the steps `metric` was logged at, over all layers."""
        arrays = [steps for steps, _ in self.series.get(metric, {}).values()]
        return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)


def has_events(path):
    try:
        return any(name.startswith(EVENT_FILE_PREFIX) for name in os.listdir(path))
    except OSError:
        return False


def find_runs(log_dir):
    """`(label, path)` of the run directories below `log_dir` that may be ours.

    Every directory named `initkit` holding event files (the monitors' runs, e.g. one
    per demo run), or `log_dir` itself when it holds event files and no such directory
    does. Raises `FileNotFoundError` when `log_dir` is not a directory.
    """
    log_dir = os.fspath(log_dir)
    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"log directory {log_dir!r} does not exist or is not a directory")
    runs = []
    for root, dirs, _ in os.walk(log_dir):
        dirs.sort()
        if os.path.basename(root) == RUN_NAME and has_events(root):
            runs.append(root)
    if not runs and has_events(log_dir):
        runs = [log_dir]
    return [(_label(path, log_dir), path) for path in runs]


def _label(path, log_dir):
    """A run's name: its path below `log_dir`; the directory's own name (".." and all,
    as given) when `log_dir` is the run itself, not "."."""
    label = os.path.relpath(path, log_dir)
    if label == os.curdir:
        label = os.path.basename(os.path.abspath(path)) or path
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        if label == RUN_NAME and parent:  # "LOGDIR/initkit" given: "LOGDIR/initkit"
            label = f"{parent}/{label}"
    return label.replace(os.sep, "/")


class CorruptEventFileWarning(UserWarning):
    """An event file holds a corrupt record: its records from there on are not read."""


def _corrupt(path, index, offset, reason):
    warnings.warn(
        CorruptEventFileWarning(
            f"corrupt event file {path}: record {index + 1}, at byte {offset}: {reason}; "
            f"read the {index} record(s) before it and skipped the rest of the file (as "
            "TensorBoard does)"
        ),
        stacklevel=2,
    )


def records(path):
    """The records of one TFRecord file, as bytes, up to its first corrupt one (with a
    `CorruptEventFileWarning`); a truncated last record (a file being written) ends it
    silently."""
    found, corruption = tfrecord.read(path)
    if corruption is not None:
        _corrupt(path, corruption.index, corruption.offset, corruption.reason)
    return found


def events(run_path):
    """The `Event` protos of a run directory's event files, in file-name order; a file's
    events up to its first corrupt record (see `records`)."""
    names = sorted(n for n in os.listdir(run_path) if n.startswith(EVENT_FILE_PREFIX))
    for name in names:
        path = os.path.join(run_path, name)
        offset = 0
        for index, data in enumerate(records(path)):
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError:  # checksums that match data no writer made
                _corrupt(path, index, offset, "it is not an Event proto")
                break
            offset += tfrecord.HEADER + len(data) + tfrecord.FOOTER
            yield event


def parse_json_record(tensor_proto):
    """The payload of a `keras_initkit.summary.json_summary` record."""
    return json.loads(tensor_proto.string_val[0].decode("utf-8"))


def _is_latest(kept, tag, step):
    """Whether a record of `tag` at `step` replaces the one `kept` (`{tag: (step, _)}`) holds."""
    return tag not in kept or step >= kept[tag][0]


def _keep_record(meta, findings, tag, step, payload):
    """Keeps a dashboard JSON record when it is the latest of its tag.

    The `initkit/layers` record goes to `meta`, a findings record's list to `findings`
    (both `{tag: (step, value)}`); other tags are ignored.
    """
    if tag == LAYERS_TAG:
        if _is_latest(meta, tag, step):
            meta[tag] = (step, payload)
    elif tag == FINDINGS_TAG or tag.startswith(FINDINGS_TAG + "/"):
        if _is_latest(findings, tag, step):
            findings[tag] = (step, payload.get("findings", []))


def _scalar_number(value, plugin):
    """The number of a scalar summary value, or None when it holds no numeric scalar."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor" or plugin != "scalars":
        return None
    tensor = value.tensor
    if tensor.float_val and not tensor.tensor_shape.dim:
        return float(tensor.float_val[0])
    array = tensor_util.make_ndarray(tensor)
    if array.ndim != 0 or array.dtype.kind not in "fiu":
        return None
    return float(array)


def _add_point(points, seen, tag, step, number):
    """Records a `<metric>/<layer>` scalar in `points`; a tag of another form is skipped."""
    metric, sep, layer = tag.partition("/")
    if not sep or not layer:
        return
    points.setdefault((metric, layer), {})[step] = number
    seen.setdefault(layer, None)


def _read_events(path):
    """The scalars and dashboard records of the event files in the directory `path`.

    Returns `(points, seen, meta, findings)`: `{(metric, layer): {step: value}}`, the
    layers by first appearance (a dict used as an ordered set), the latest
    `initkit/layers` record as `(step, payload)` (None without one) and
    `{tag: (step, list)}`, the latest findings list of each findings tag.
    """
    plugin_of = {}  # tag -> plugin name (summary metadata comes with a tag's first value)
    points, seen, meta, findings = {}, {}, {}, {}
    for event in events(path):
        if not event.HasField("summary"):
            continue
        step = int(event.step)
        for value in event.summary.value:
            tag = value.tag
            if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                plugin_of[tag] = value.metadata.plugin_data.plugin_name
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                plugin_of.setdefault(tag, "scalars")
            elif kind == "tensor" and plugin_of.get(tag) == PLUGIN_NAME:
                payload = parse_json_record(value.tensor)
                _keep_record(meta, findings, tag, step, payload)
                continue
            number = _scalar_number(value, plugin_of.get(tag))
            if number is not None:
                _add_point(points, seen, tag, step, number)
    return points, seen, meta.get(LAYERS_TAG), findings


def _layer_order(meta_layers, seen, has_points):
    """Layer names in forward order: those the layers record lists (all of them when the
    run holds no scalars), then the others in the order they first appear."""
    if not has_points:
        return list(meta_layers)
    listed = [name for name in meta_layers if name in seen]
    return listed + [name for name in seen if name not in set(listed)]


def _series(points, layers):
    """`{metric: {layer: (steps, values)}}` sorted by step, each metric's layers in the
    order of `layers`."""
    series = {}
    for (metric, layer), by_step in points.items():
        steps = np.fromiter(by_step, np.int64, len(by_step))
        values = np.fromiter(by_step.values(), np.float64, len(by_step))
        index = np.argsort(steps, kind="stable")
        series.setdefault(metric, {})[layer] = (steps[index], values[index])
    rank = {name: i for i, name in enumerate(layers)}
    for metric in series:  # layers of a metric in forward order
        series[metric] = dict(sorted(series[metric].items(), key=lambda kv: rank[kv[0]]))
    return series


def _steps(per_metric):
    """`{metric: {layer: step}}` of a record's JSON."""
    return {
        str(m): {str(n): parse_number(step) for n, step in layers.items()}
        for m, layers in (per_metric or {}).items()
    }


def meta_thresholds(payload):
    """`{"thresholds", "lower_thresholds", "exempt", "exempt_until", "judged_from",
    "epoch_ends"}` of an `initkit/layers` record's JSON `payload` (None: no record), for
    `Run(**...)`."""
    payload = payload or {}
    out = {
        key: {k: parse_number(v) for k, v in (payload.get(key) or {}).items()}
        for key in ("thresholds", "lower_thresholds")
    }
    exempt = payload.get("exempt") or {}
    out["exempt"] = {
        side: {m: [str(n) for n in names] for m, names in (exempt.get(side) or {}).items()}
        for side in ("above", "below")
        if exempt.get(side)
    }
    out["judged_from"] = _steps(payload.get("judged_from"))
    until = payload.get("exempt_until") or {}
    out["exempt_until"] = {
        side: _steps(until[side]) for side in ("above", "below") if until.get(side)
    }
    ends = payload.get("epoch_ends") or {}
    out["epoch_ends"] = (
        {"metrics": [str(m) for m in ends["metrics"]], "steps": [int(s) for s in ends["steps"]]}
        if ends.get("metrics")
        else {}
    )
    return out


def read_run(path, label=None):
    """The `Run` in the directory `path`, or None when it holds no keras_initkit data."""
    points, seen, meta, findings = _read_events(path)
    has_meta = meta is not None
    if not points and not has_meta:
        return None
    if not has_meta and not any(metric in METRICS for metric, _ in points):
        return None
    payload = meta[1] if has_meta else {}
    layers = _layer_order(payload.get("layers", []), seen, bool(points))
    return Run(
        label=os.path.basename(path) if label is None else label,
        path=path,
        layers=layers,
        series=_series(points, layers),
        findings=[f for tag in sorted(findings) for f in findings[tag][1]],
        has_meta=has_meta,
        has_findings=bool(findings),
        **meta_thresholds(payload),
    )


def read_logdir(log_dir):
    """Every keras_initkit `Run` below `log_dir` (see `find_runs`), in path order."""
    runs = []
    for label, path in find_runs(log_dir):
        run = read_run(path, label)
        if run is not None:
            runs.append(run)
    return runs


def parse_number(value):
    """A float from a JSON record's number or "nan"/"inf"/"-inf" string; None stays None."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

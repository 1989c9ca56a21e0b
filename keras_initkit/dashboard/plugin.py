"""The `initkit` TensorBoard plugin: the whole network at once, per run and metric.

Registered through the `tensorboard_plugins` entry point, so an installed keras_initkit
adds the tab to any `tensorboard --logdir ...`. The data come from TensorBoard's data
provider (the scalars its multiplexer loaded, plus this plugin's `initkit/layers` and
`initkit/findings` records); the frontend is the hand-written ES module
`static/app.js`, shared with the HTML report.

Routes (under `/data/plugin/initkit/`):

- `index.js`, `app.js`: the frontend.
- `runs`: `{"runs": [{run, metrics, finding_metrics, layers, findings, has_meta}, ...]}`, the runs holding
  keras_initkit data.
- `heatmap?run=R&metric=M`: `{run, metric, layers, steps, values, threshold, scale}`, the
  layers (forward order) x steps matrix of one metric (`keras_initkit.dashboard.model`).
- `findings?run=R`: `{"findings": [{rule, layers, count, first_step, worst, worst_layer,
  fix, message}, ...]}`, grouped by rule and fix.
"""

import json
import os

import numpy as np
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.context import RequestContext
from tensorboard.data import provider as data_provider
from tensorboard.plugins import base_plugin
from tensorboard.util import tensor_util
from werkzeug import wrappers

from keras_initkit.dashboard import events, model

PLUGIN_NAME = events.PLUGIN_NAME
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_NO_DOWNSAMPLING = 10**9  # the multiplexer has already sampled (1000 scalars per tag)


def _scalar(tensor_proto):
    """The value of a scalars-plugin tensor (float32 `float_val` as our writers write it)."""
    if tensor_proto.float_val and not tensor_proto.tensor_shape.dim:
        return tensor_proto.float_val[0]
    return float(tensor_util.make_ndarray(tensor_proto))


def _json_response(request, text, code=200):
    return http_util.Respond(request, text, "application/json", code=code)


class InitkitPlugin(base_plugin.TBPlugin):
    """TensorBoard's `initkit` tab: layers x steps heatmaps, runs side by side, findings.

    Args:
        context: the `base_plugin.TBContext` TensorBoard passes.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        self._provider = context.data_provider
        # The multiplexer (where TensorBoard has one: local log directories) lists tags
        # and hands out a tag's events without the data provider's per-call work (its
        # `list_scalars` walks every event of every tag for `max_step`: 0.2 s for 800
        # tags x 200 steps, on every request).
        self._multiplexer = getattr(context, "multiplexer", None)

    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_static("index.js"),
            "/app.js": self._serve_static("app.js"),
            "/runs": self._serve_runs,
            "/heatmap": self._serve_heatmap,
            "/findings": self._serve_findings,
        }

    def data_plugin_names(self):
        return (PLUGIN_NAME,)

    def is_active(self):
        """Active when a run holds keras_initkit metrics (logs from before the meta record)."""
        if self._provider is None:
            return False
        return bool(self._our_runs(RequestContext(), ""))

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="initkit")

    # -- data --------------------------------------------------------------------------

    def _our_runs(self, ctx, eid):
        """Runs with an `initkit` record or a DESIGN metric, in TensorBoard's run order."""
        if self._multiplexer is not None:
            scalars = self._multiplexer.PluginRunToTagToContent("scalars")
            tensors = self._multiplexer.PluginRunToTagToContent(PLUGIN_NAME)
        else:
            scalars = self._provider.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")
            tensors = self._provider.list_tensors(ctx, experiment_id=eid, plugin_name=PLUGIN_NAME)
        ours = {run for run, tags in tensors.items() if tags}
        for run, tags in scalars.items():
            if any(tag.partition("/")[0] in events.METRICS for tag in tags):
                ours.add(run)
        return sorted(ours)

    def _records(self, ctx, eid, run):
        """`(meta payload or None, findings or None)`: the latest record of each tag
        (findings None: the run holds no findings record)."""
        listed = self._provider.list_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=PLUGIN_NAME,
            run_tag_filter=data_provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        if not listed:
            return None, None
        data = self._provider.read_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=PLUGIN_NAME,
            downsample=_NO_DOWNSAMPLING,
            run_tag_filter=data_provider.RunTagFilter(runs=[run], tags=list(listed)),
        ).get(run, {})
        meta, findings = None, None
        for tag in sorted(data):
            if not data[tag]:
                continue
            latest = max(data[tag], key=lambda datum: datum.step)
            payload = json.loads(latest.numpy.item().decode("utf-8"))
            if tag == events.LAYERS_TAG:
                meta = payload
            elif tag == events.FINDINGS_TAG or tag.startswith(events.FINDINGS_TAG + "/"):
                findings = (findings or []) + payload.get("findings", [])
        return meta, findings

    def read_run(self, ctx, eid, run, metrics=None):
        """The `events.Run` of `run` from TensorBoard's loaded data: the series of
        `metrics` (a collection of metric names; all when None)."""
        tags = self._scalar_tags(ctx, eid, run)
        order, series = [], {}
        seen = set()
        wanted = []
        for tag in tags:
            name, sep, layer = tag.partition("/")
            if not sep or not layer:
                continue
            if layer not in seen:
                seen.add(layer)
                order.append(layer)
            series.setdefault(name, {})
            if metrics is None or name in metrics:
                wanted.append(tag)
        for tag, (steps, values) in self._scalar_series(ctx, eid, run, wanted).items():
            name, _, layer = tag.partition("/")
            index = np.argsort(steps, kind="stable")
            series[name][layer] = (steps[index], values[index])
        meta, findings = self._records(ctx, eid, run)
        listed = [n for n in (meta or {}).get("layers", []) if n in seen]
        layers = listed + [n for n in order if n not in set(listed)]
        rank = {n: i for i, n in enumerate(layers)}
        series = {m: dict(sorted(s.items(), key=lambda kv: rank[kv[0]])) for m, s in series.items()}
        return events.Run(
            label=run,
            path=run,
            layers=layers,
            series=series,
            findings=findings or [],
            has_findings=findings is not None,
            has_meta=meta is not None,
            **events.meta_thresholds(meta),
        )

    def _scalar_tags(self, ctx, eid, run):
        if self._multiplexer is not None:
            return list(self._multiplexer.PluginRunToTagToContent("scalars").get(run, {}))
        return list(
            self._provider.list_scalars(
                ctx,
                experiment_id=eid,
                plugin_name="scalars",
                run_tag_filter=data_provider.RunTagFilter(runs=[run]),
            ).get(run, {})
        )

    def _scalar_series(self, ctx, eid, run, tags):
        """`{tag: (steps, values)}` as int64 and float64 arrays."""
        out = {}
        if not tags:
            return out
        if self._multiplexer is not None:
            for tag in tags:
                tensors = self._multiplexer.Tensors(run, tag)
                steps = np.fromiter((e.step for e in tensors), np.int64, len(tensors))
                values = np.fromiter(
                    (_scalar(e.tensor_proto) for e in tensors), np.float64, len(tensors)
                )
                out[tag] = (steps, values)
            return out
        data = self._provider.read_scalars(
            ctx,
            experiment_id=eid,
            plugin_name="scalars",
            downsample=_NO_DOWNSAMPLING,
            run_tag_filter=data_provider.RunTagFilter(runs=[run], tags=list(tags)),
        ).get(run, {})
        for tag, points in data.items():
            steps = np.fromiter((p.step for p in points), np.int64, len(points))
            values = np.fromiter((p.value for p in points), np.float64, len(points))
            out[tag] = (steps, values)
        return out

    # -- routes ------------------------------------------------------------------------

    def _serve_static(self, name):
        path = os.path.join(STATIC, name)

        @wrappers.Request.application
        def serve(request):
            with open(path, "rb") as f:
                return http_util.Respond(request, f.read(), "text/javascript")

        return serve

    @wrappers.Request.application
    def _serve_runs(self, request):
        ctx = plugin_util.context(request.environ)
        eid = plugin_util.experiment_id(request.environ)
        runs = []
        for run in self._our_runs(ctx, eid):
            tags = self._scalar_tags(ctx, eid, run)
            metrics, layers = set(), set()
            for tag in tags:
                name, sep, layer = tag.partition("/")
                if sep and layer:
                    metrics.add(name)
                    layers.add(layer)
            first = next((t for t in tags if t.partition("/")[2]), None)
            steps = self._scalar_series(ctx, eid, run, [first] if first else [])
            max_step = int(max(steps[first][0], default=0)) if first else 0
            meta, findings = self._records(ctx, eid, run)
            runs.append(
                {
                    "run": run,
                    "metrics": model.metric_order(metrics),
                    "finding_metrics": model.finding_metrics(findings, metrics),
                    "layers": len(layers),
                    "max_step": max_step,
                    "findings": len(findings or []),
                    "has_meta": meta is not None,
                }
            )
        return _json_response(request, model.dumps({"runs": runs}))

    @wrappers.Request.application
    def _serve_heatmap(self, request):
        run, metric = request.args.get("run"), request.args.get("metric")
        if not run or not metric:
            return _json_response(request, '{"error": "run and metric are required"}', 400)
        ctx = plugin_util.context(request.environ)
        eid = plugin_util.experiment_id(request.environ)
        data = self.read_run(ctx, eid, run, {metric})
        return _json_response(request, model.dumps(model.heatmap(data, metric)))

    @wrappers.Request.application
    def _serve_findings(self, request):
        run = request.args.get("run")
        if not run:
            return _json_response(request, '{"error": "run is required"}', 400)
        ctx = plugin_util.context(request.environ)
        eid = plugin_util.experiment_id(request.environ)
        data = self.read_run(ctx, eid, run, metrics=())  # order and records, no scalars
        if not data.has_findings and data.has_thresholds:  # logs from before the record
            data = self.read_run(ctx, eid, run)
        elif measured := {str(f["metric"]) for f in data.findings if f.get("metric")}:
            # The layers logging a rule's metric: a range spans those alone (see
            # `model.group_findings`), as in `keras-initkit report` and the HTML file.
            data = self.read_run(ctx, eid, run, measured)
        groups, source = model.findings(data)
        return _json_response(request, model.dumps({"findings": groups, "source": source}))

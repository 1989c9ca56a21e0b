"""The `initkit` TensorBoard plugin: the whole network at once, per run and metric.

Registered through the `tensorboard_plugins` entry point, so an installed keras_initkit
adds the tab to any `tensorboard --logdir ...`. The data come from TensorBoard's data
provider (the scalars its multiplexer loaded, plus this plugin's `initkit/layers` and
`initkit/findings` records); the frontend is the hand-written ES module
`static/app.js`, shared with the HTML report.

Routes (under `/data/plugin/initkit/`):

- `index.js`, `app.js`: the frontend.
- `runs`: `{"runs": [{run, metrics, layers, findings, has_meta}, ...]}`, the runs holding
  keras_initkit data.
- `heatmap?run=R&metric=M`: `{run, metric, layers, steps, values, threshold, scale}`, the
  layers (forward order) x steps matrix of one metric (`keras_initkit.dashboard.model`).
- `findings?run=R`: `{"findings": [{rule, layers, count, first_step, worst, worst_layer,
  fix, message}, ...]}`, grouped by rule and fix.
"""

import os

from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.context import RequestContext
from tensorboard.data import provider as data_provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from keras_initkit.dashboard import events, model

PLUGIN_NAME = events.PLUGIN_NAME
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_NO_DOWNSAMPLING = 10**9  # the multiplexer has already sampled (1000 scalars per tag)


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
        scalars = self._provider.list_scalars(ctx, experiment_id=eid, plugin_name="scalars")
        tensors = self._provider.list_tensors(ctx, experiment_id=eid, plugin_name=PLUGIN_NAME)
        ours = set(tensors)
        for run, tags in scalars.items():
            if any(tag.partition("/")[0] in events.METRICS for tag in tags):
                ours.add(run)
        return sorted(ours)

    def _records(self, ctx, eid, run):
        """`(meta payload or None, findings)`: the latest record of each tag."""
        listed = self._provider.list_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=PLUGIN_NAME,
            run_tag_filter=data_provider.RunTagFilter(runs=[run]),
        ).get(run, {})
        if not listed:
            return None, []
        data = self._provider.read_tensors(
            ctx,
            experiment_id=eid,
            plugin_name=PLUGIN_NAME,
            downsample=_NO_DOWNSAMPLING,
            run_tag_filter=data_provider.RunTagFilter(runs=[run], tags=list(listed)),
        ).get(run, {})
        meta, findings = None, []
        for tag in sorted(data):
            if not data[tag]:
                continue
            latest = max(data[tag], key=lambda datum: datum.step)
            payload = events.json.loads(latest.numpy.item().decode("utf-8"))
            if tag == events.LAYERS_TAG:
                meta = payload
            elif tag == events.FINDINGS_TAG or tag.startswith(events.FINDINGS_TAG + "/"):
                findings.extend(payload.get("findings", []))
        return meta, findings

    def read_run(self, ctx, eid, run, metric=None):
        """The `events.Run` of `run` from the data provider (only `metric` when given)."""
        import numpy as np

        tags = self._provider.list_scalars(
            ctx,
            experiment_id=eid,
            plugin_name="scalars",
            run_tag_filter=data_provider.RunTagFilter(runs=[run]),
        ).get(run, {})
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
            if metric is None or name == metric:
                wanted.append(tag)
        if wanted:
            data = self._provider.read_scalars(
                ctx,
                experiment_id=eid,
                plugin_name="scalars",
                downsample=_NO_DOWNSAMPLING,
                run_tag_filter=data_provider.RunTagFilter(runs=[run], tags=wanted),
            ).get(run, {})
            for tag in wanted:
                points = data.get(tag, [])
                name, _, layer = tag.partition("/")
                steps = np.fromiter((p.step for p in points), np.int64, len(points))
                values = np.fromiter((p.value for p in points), np.float64, len(points))
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
            findings=findings,
            thresholds={
                k: events._number(v) for k, v in ((meta or {}).get("thresholds") or {}).items()
            },
            has_meta=meta is not None,
        )

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
            tags = self._provider.list_scalars(
                ctx,
                experiment_id=eid,
                plugin_name="scalars",
                run_tag_filter=data_provider.RunTagFilter(runs=[run]),
            ).get(run, {})
            metrics, layers, steps = set(), set(), 0
            for tag, series in tags.items():
                name, sep, layer = tag.partition("/")
                if sep and layer:
                    metrics.add(name)
                    layers.add(layer)
                    steps = max(steps, series.max_step)
            meta, findings = self._records(ctx, eid, run)
            runs.append(
                {
                    "run": run,
                    "metrics": model.metric_order(metrics),
                    "layers": len(layers),
                    "max_step": steps,
                    "findings": len(findings),
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
        data = self.read_run(ctx, eid, run, metric)
        return _json_response(request, model.dumps(model.heatmap(data, metric)))

    @wrappers.Request.application
    def _serve_findings(self, request):
        run = request.args.get("run")
        if not run:
            return _json_response(request, '{"error": "run is required"}', 400)
        ctx = plugin_util.context(request.environ)
        eid = plugin_util.experiment_id(request.environ)
        data = self.read_run(ctx, eid, run, metric="")  # order and records, no scalars
        return _json_response(request, model.dumps({"findings": model.group_findings(data)}))

"""`keras-initkit report LOGDIR --html out.html`: the dashboard as one self-contained file.

The page inlines the dashboard's script (`static/app.js`, the TensorBoard tab's), its
styles and every run's heatmaps and grouped findings as JSON: it opens from disk, needs
no server and no network, and can be kept as a CI artifact.
"""

import html
import os

from keras_initkit.dashboard import model

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def report_data(runs, title=None, findings=None):
    """The page's data: run list, `{run: {metric: heatmap}}`, `{run: grouped findings}`.

    `findings` (`{run label: (groups, source)}`, see `model.findings`) replaces the
    runs' own.
    """
    listing, heatmaps, grouped, sources = [], {}, {}, {}
    for run in runs:
        listing.append(model.run_summary(run))
        heatmaps[run.label] = {m: model.heatmap(run, m) for m in model.metric_order(run.metrics)}
        groups, source = (findings or {}).get(run.label) or model.findings(run)
        grouped[run.label], sources[run.label] = groups, source
    return {
        "title": title,
        "runs": listing,
        "heatmaps": heatmaps,
        "findings": grouped,
        "findings_source": sources,
    }


def render(runs, title="keras_initkit report", findings=None):
    """The HTML text of the report of `runs` (`keras_initkit.dashboard.events.Run`)."""
    with open(os.path.join(STATIC, "app.js"), encoding="utf-8") as f:
        app = f.read()
    data = model.dumps(report_data(runs, title, findings))
    # `</` would end the script element early: JSON allows `<\/` for the same text.
    data = data.replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
</head>
<body>
<div id="initkit"></div>
<script type="application/json" id="initkit-data">{data}</script>
<script type="module">
{app}
const data = JSON.parse(document.getElementById('initkit-data').textContent);
mount(document.getElementById('initkit'), inlineSource(data));
</script>
</body>
</html>
"""


def write(runs, path, title="keras_initkit report", findings=None):
    """Write the report of `runs` to `path` (arguments as `report_data`)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(runs, title, findings))
    return path

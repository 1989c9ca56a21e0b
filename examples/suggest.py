"""Ask keras_initkit which initializer to use, then check the answer by training.

The demo's net (32 x `Dense(64, activation="relu")`, no batch norm, no skip
connections) on scikit-learn's bundled 8x8 digits, built with Keras' defaults:

1. `keras_initkit.suggest_initializer(model, x, y)` tries the candidate
   initializers on a copy of the model and 256 training samples and prints the
   ranking (signal propagation: activation drift, gradient ratio, input
   sensitivity, dead units);
2. with `apply=True` the model is re-initialized with the winner;
3. the suggested model and an identical one with Keras' default initialization
   are trained the same way, and their validation accuracies printed.

    python examples/suggest.py            # under a minute on 2 CPU cores
    python examples/suggest.py --steps 20 # rank by the loss after 20 training steps
"""

import argparse
import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keras_initkit as ik  # noqa: E402


def load_data(seed=0):
    """Standardized digits, 80/20 stratified split (as examples/demo.py)."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype("float32"),
        y_train,
        scaler.transform(x_val).astype("float32"),
        y_val,
    )


def build_model(depth, seed):
    """The demo's deep plain MLP with Keras' default initializers."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,))])
    for _ in range(depth):
        model.add(keras.layers.Dense(64, activation="relu"))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="training steps per candidate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x_train, y_train, x_val, y_val = load_data(args.seed)
    default = build_model(args.depth, args.seed)
    suggested = build_model(args.depth, args.seed)  # the same weights

    start = time.perf_counter()
    report = ik.suggest_initializer(
        suggested, x_train[:256], y_train[:256], steps=args.steps, apply=True
    )
    seconds = time.perf_counter() - start
    print(report)
    print(f"suggest_initializer: {seconds:.1f} s for {len(report.candidates)} candidates\n")

    for name, model in (("keras default", default), (report.best.name, suggested)):
        keras.utils.set_random_seed(args.seed + 1)  # the same shuffling
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            epochs=args.epochs,
            batch_size=64,
            verbose=0,
        )
        accuracy = history.history["val_accuracy"][-1]
        print(f"{name:>14}: val accuracy {accuracy:.3f} after {args.epochs} epochs")


if __name__ == "__main__":
    main()

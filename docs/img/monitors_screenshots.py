"""The short fit behind the TensorBoard screenshots of docs/monitors.md.

    python docs/img/monitors_screenshots.py /tmp/tb_logs
    tensorboard --logdir /tmp/tb_logs --host 127.0.0.1 --port 6006 &
    chromium --headless --no-sandbox --disable-gpu --enable-unsafe-swiftshader \
        --virtual-time-budget=15000 --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run \
        --user-data-dir=$(mktemp -d) --window-size=1400,900 \
        --screenshot=docs/img/tensorboard-scalars.png \
        'http://127.0.0.1:6006/#scalars&tagFilter=saturated_fraction'
    (and the same with '.../#custom_scalars' -> tensorboard-custom-scalars.png)
"""

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_initkit as ik  # noqa: E402


def main(log_dir):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 32)).astype("float32")
    y = (np.sin(x[:, :4].sum(axis=1)) > 0).astype("int32")
    near_glorot = keras.initializers.RandomNormal(stddev=0.15)
    inputs = keras.Input((32,))
    h = inputs
    for i in range(6):
        h = keras.layers.Dense(
            64, activation="tanh", kernel_initializer=near_glorot, name=f"tanh_{i}"
        )(h)
    for i in range(5):
        h = keras.layers.Dense(64, activation="relu", name=f"relu_{i}")(h)
        if i == 2:
            h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(h)
    model = keras.Model(inputs, outputs)
    # Too high a learning rate: the tanh layers drift into saturation, ReLU units die.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    warnings.simplefilter("ignore", ik.callbacks.InitkitWarning)
    model.fit(
        x,
        y,
        batch_size=64,
        epochs=8,
        validation_split=0.1,
        callbacks=[
            # Keras' TensorBoard first: placed after the monitor it would copy the
            # per-layer logs into its own run as epoch_<metric>/<layer>.
            keras.callbacks.TensorBoard(log_dir=log_dir),
            ik.callbacks.TrainingMonitor(x[:256], log_dir=log_dir, update_freq=8, verbose=0),
        ],
        verbose=2,
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tb_logs")

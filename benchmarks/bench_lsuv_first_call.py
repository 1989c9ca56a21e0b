"""`lsuv_init`'s first calls in a process: a compiled pass against an eager one.

Run from the repository root (JAX is where it matters; any backend runs):

    KERAS_BACKEND=jax python benchmarks/bench_lsuv_first_call.py [--models resnet50,efficientnetb0] [--rounds 2]

For each model (keras.applications, weights=None, 32x32, batch 32) and round, two fresh
processes, alternating: `lsuv_init(..., jit_compile=False)` and `jit_compile=True`. Each
times `predict`'s first call, then `lsuv_init` on three fresh models of the architecture
in turn. Printed: the seconds, and the first `lsuv_init` / first `predict` (side by side
in one process). No target: docs/lsuv.md explains the default (`"auto"`: compiled on JAX).
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _cli import known_names, positive_int  # noqa: E402

MODELS = {"resnet50": "ResNet50", "efficientnetb0": "EfficientNetB0"}


def child(name, jit_compile):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(HERE))
    import keras
    import numpy as np

    import keras_initkit as ik

    build = getattr(keras.applications, MODELS[name])
    x = np.random.default_rng(0).normal(size=(32, 32, 32, 3)).astype("float32")

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    first = build(weights=None, input_shape=(32, 32, 3), classes=10)
    predict = timed(lambda: first.predict(x, verbose=0))
    calls = []
    for _ in range(3):
        model = build(weights=None, input_shape=(32, 32, 3), classes=10)
        calls.append(timed(lambda m=model: ik.lsuv_init(m, x, verbose=0, jit_compile=jit_compile)))
    print(predict, *calls)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1] == "True")
    models = known_names(parser, "--models", args.models, tuple(MODELS))
    print(f"backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}; seconds, fresh process each")
    print(
        f"{'model':<15} {'pass':<9} {'predict':>8} {'lsuv 1st':>9} {'2nd':>6} {'3rd':>6} {'1st/predict':>12}"
    )
    for model in models:
        for _ in range(args.rounds):
            for jit in (False, True):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", model, str(jit)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                predict, *calls = map(float, out.stdout.split()[-4:])
                label = "compiled" if jit else "eager"
                print(
                    f"{model:<15} {label:<9} {predict:8.2f} {calls[0]:9.2f} {calls[1]:6.2f} "
                    f"{calls[2]:6.2f} {calls[0] / predict:11.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()

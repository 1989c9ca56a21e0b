#!/usr/bin/env bash
# The backend-agnostic tests and the real-model benchmark on a CUDA GPU, JAX and torch.
#
# Run from the repository root on a machine with an NVIDIA GPU, jax[cuda] and torch (CUDA)
# installed, and no TensorFlow:
#
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
#
# Keras and its two pure-Python needs that the machine lacks may sit as wheels in .whl/
# (installed into /tmp/site, nothing fetched). Each part has its own time limit, so one
# that hangs cannot take the others' time; logs go to $OUT. No verdict is printed here:
# the tests print theirs, the benchmark its PASS/FAIL lines.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2 KERAS_HOME=/tmp/keras_home
# Several test workers share one GPU: JAX must not take 75% of its memory per process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_INITKIT_EXPECT_NO_TF=1
SITE=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --target "$SITE" . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
export PYTHONPATH=$SITE PATH=$SITE/bin:$PATH

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for b in jax torch; do
    KERAS_BACKEND=$b python3 -c "
import sys, keras, numpy
import keras_initkit
print(sys.version.split()[0], 'keras', keras.__version__, 'numpy', numpy.__version__, end=' ')
if keras.backend.backend() == 'jax':
    import jax; print('jax', jax.__version__, jax.devices())
else:
    import torch; print('torch', torch.__version__, keras.src.backend.torch.core.get_device())
" 2>&1 | tail -1
done

# The suite compares with NumPy references to float32 rounding, and fits with and
# without monitors bit for bit: on a GPU that needs what a CPU does by default, float32
# matrix products (no TF32: NVIDIA_TF32_OVERRIDE for cuBLAS and cuDNN, JAX's matmul
# precision) and deterministic kernels (XLA's flag; torch's switch, set in conftest.py).
# Users' runs are not made so: the benchmark below runs with the defaults.
TEST_ENV=(NVIDIA_TF32_OVERRIDE=0 JAX_DEFAULT_MATMUL_PRECISION=highest
    "XLA_FLAGS=${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true"
    CUBLAS_WORKSPACE_CONFIG=:4096:8 KERAS_INITKIT_DETERMINISTIC=1)
# TEST_IDS: a file of test ids, one per line (a rerun of some); else the whole suite.
if [ -n "${TEST_IDS:-}" ]; then mapfile -t targets <"$TEST_IDS"; targets+=(-m backend_agnostic); else targets=(tests -m backend_agnostic); fi
# The two suites at once (16 cores, one GPU), each with a limit.
pids=()
for b in jax torch; do
    env "${TEST_ENV[@]}" KERAS_BACKEND=$b timeout "${TEST_LIMIT:-240}" python3 -m pytest \
        "${targets[@]}" -v -n "${WORKERS:-7}" -p no:cacheprovider \
        -o addopts="-rfE --strict-markers" >"$OUT/tests_$b.log" 2>&1 &
    pids+=($!)
done
for i in 0 1; do
    wait "${pids[$i]}"
    echo "tests on ${i/0/jax}: exit $?" | sed 's/on 1:/on torch:/'
done
for b in jax torch; do
    echo "== $b"
    # -v: xdist prints each result as it comes, so a suite stopped at its limit still
    # says what failed so far.
    grep -E "(FAILED|ERROR) tests|^(FAILED|ERROR)|passed|failed" "$OUT/tests_$b.log" \
        | cut -c1-250 | sort -u | tail -40
    echo "$(grep -c PASSED "$OUT/tests_$b.log") passed so far"
done

# The benchmark, one backend after the other (timings side by side within each run).
for b in ${BENCH_BACKENDS:-jax torch}; do
    echo "== bench_real_models on $b"
    KERAS_BACKEND=$b timeout "${BENCH_LIMIT:-100}" python3 benchmarks/bench_real_models.py \
        ${BENCH_ARGS:---rounds 2 --cold-rounds 1 --no-chain} 2>&1 | grep -v "^WARNING\|^I0000\|^W0000" \
        | tee "$OUT/bench_$b.log" | grep -E "PASS|FAIL|x predict|total|Error|error" | cut -c1-200
done

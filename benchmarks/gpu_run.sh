#!/usr/bin/env bash
# Everything issue 14 needs from one short lease of a GPU machine, in one command:
#
#   bash benchmarks/gpu_run.sh "$OUT"            # all of it (more than one 600 s call of the device tool)
#   bash benchmarks/gpu_run.sh "$OUT" tests      # the GPU tests: parity, the step and Ops, every cupy case
#   bash benchmarks/gpu_run.sh "$OUT" bench      # G1-G3 only
#
# run from the repository root of a bare GPU machine (the device tool's: numpy, cupy, torch, pytest and
# hypothesis are there). It installs what that machine lacks from wheels carried in .whl/ (array-api-compat,
# array-api-strict; see the comment below), then writes into the folder given:
#   nvidia-smi.txt, tests-parity.log (CuPy against NumPy, the step's tests), gpu-results.json and
#   bench.log (G1-G3), then tests.log (the whole suite, cupy included).
# To prepare .whl/ here (pure-Python wheels, any platform):
#   python3 -m pip download --no-deps -d .whl array-api-compat==1.16.0 array-api-strict==2.6.1
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_run.sh OUTDIR [all|tests|bench]}
part=${2:-all}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import cupy, mlp_xp; print('GPUs:', cupy.cuda.runtime.getDeviceCount(), 'mlp_xp', mlp_xp.__version__)" \
    || exit 1
if [ "$part" != bench ]; then
    # the parity tests first: they say whether the timings below mean anything
    python3 -m pytest tests/test_gpu_parity.py tests/test_step.py tests/test_ops.py -q -p no:cacheprovider -rfEs 2>&1 \
        | tee "$out/tests-parity.log" | tail -n 15
fi
if [ "$part" = tests ]; then  # every other test's cupy case
    python3 -m pytest tests -q -p no:cacheprovider -rfEs -k cupy --ignore=tests/test_gpu_parity.py \
        > "$out/tests-cupy.log" 2>&1
    grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests-cupy.log" | tail -n 25
fi
if [ "$part" != tests ]; then
    python3 benchmarks/gpu.py --output "$out/gpu-results.json" > "$out/bench.log" 2>&1; tail -n 30 "$out/bench.log"
fi
if [ "$part" = all ]; then
    # the whole suite last: a run cut off at its time limit still leaves the log of what ran
    python3 -m pytest tests -q -p no:cacheprovider -rfEs --durations=10 > "$out/tests.log" 2>&1
    grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests.log" | tail -n 25
fi

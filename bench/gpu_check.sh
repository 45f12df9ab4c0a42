#!/usr/bin/env bash
# One-shot GPU check for issue 12, run from the repository root on a machine with an
# NVIDIA GPU:
#
#     bash bench/gpu_check.sh            (writes $OUT/gpu_check.txt, else ./gpu_check.txt)
#
# Stages, each under its own timeout, each run whatever became of the one before (a
# failure is recorded and the next stage goes on), all output in one results file:
#   1. environment: GPU, driver, python, numpy/cupy/torch versions;
#   2. install what is missing: cupy-cuda13x or -12x for the driver's CUDA, torch (from
#      wheels in .whl/ if carried, else pip, which fails fast without a network);
#   3. every kernel source through nvcc (tests/engine/test_kernels_nvcc.py);
#   4. the CuPy half of the engine suite (pytest -m gpu) with KILN_REQUIRE_GPU=1, so a
#      GPU that CuPy cannot use fails instead of skipping (a test module that cannot be
#      imported there, for want of a package the GPU tests do not need, is reported and
#      the rest run);
#   5. bench/gpu_train_step.py: MLP and LeNet training steps, Kiln on CuPy against
#      PyTorch CUDA eager.
# The whole run keeps within KILN_GPU_CHECK_BUDGET_S seconds (default 540): a stage gets
# at most its own limit and what is left of the budget. It never touches the GPU's
# settings. The last lines of the results file are a table of the stages.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUTDIR=${OUT:-$ROOT}
RESULTS=$OUTDIR/gpu_check.txt
mkdir -p "$OUTDIR"
BUDGET=${KILN_GPU_CHECK_BUDGET_S:-540}
START=$(date +%s)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT/engine${PYTHONPATH:+:$PYTHONPATH}
SUMMARY=()
export PY RESULTS
: > "$RESULTS"

log() { echo "$*" | tee -a "$RESULTS"; }

# stage NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, budget left - 5 s).
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - ($(date +%s) - START) - 5 ))
    (( limit > left )) && limit=$left
    log ""
    log "=== $name (limit ${limit}s) ==="
    if (( limit < 10 )); then
        log "skipped: the budget of ${BUDGET}s is spent"
        SUMMARY+=("$(printf '%-34s %8s %6s' "$name" skipped -)")
        return
    fi
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$RESULTS"
    local rc=${PIPESTATUS[0]}
    local took=$(( $(date +%s) - t0 ))
    (( rc == 124 || rc == 137 )) && log "TIMED OUT after ${limit}s"
    log "--- $name: exit $rc in ${took}s"
    SUMMARY+=("$(printf '%-34s %8s %6s' "$name" "exit $rc" "${took}s")")
}

environment() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    nvidia-smi | grep -o 'CUDA Version: [0-9.]*' || true
    command -v nvcc && nvcc --version | tail -1
    "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
for name in ("numpy", "cupy", "torch", "numba", "safetensors", "pytest", "sklearn"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001 - report whatever is missing or broken
        print(f"{name}: not importable ({type(e).__name__}: {e})")
try:
    import torch
    print("torch CUDA:", torch.cuda.is_available(), torch.version.cuda)
except Exception:
    pass
try:
    import cupy
    print("cupy devices:", cupy.cuda.runtime.getDeviceCount(),
          "runtime", cupy.cuda.runtime.runtimeGetVersion())
except Exception as e:  # noqa: BLE001
    print("cupy sees no GPU:", e)
EOF
}

install_missing() {
    local cuda major pipq=("$PY" -m pip install -q --disable-pip-version-check)
    if ! command -v nvidia-smi >/dev/null; then
        echo "no nvidia-smi: no NVIDIA GPU here, nothing installed"
        return 1
    fi
    cuda=$(nvidia-smi | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$')
    major=${cuda:-12}
    if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
        echo "installing the carried wheels in .whl/"
        "${pipq[@]}" --no-index --no-deps --target /tmp/kiln-site .whl/*.whl \
            && export PYTHONPATH=/tmp/kiln-site:$PYTHONPATH
    fi
    if ! "$PY" -c "import cupy; cupy.cuda.runtime.getDeviceCount()" 2>/dev/null; then
        local pkg=cupy-cuda12x
        (( major >= 13 )) && pkg=cupy-cuda13x
        echo "cupy missing or unusable: pip install $pkg (driver CUDA $major)"
        "${pipq[@]}" --timeout 20 "$pkg" || echo "could not install $pkg"
    else
        echo "cupy: present"
    fi
    if ! "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        local index=cu126
        (( major >= 13 )) && index=cu130
        echo "torch with CUDA missing: pip install torch ($index)"
        "${pipq[@]}" --timeout 20 torch --index-url "https://download.pytorch.org/whl/$index" \
            || echo "could not install torch; the benchmark will say so"
    else
        echo "torch with CUDA: present"
    fi
    for pkg in safetensors numba pytest scikit-learn; do
        "$PY" -c "import ${pkg/scikit-learn/sklearn}" 2>/dev/null \
            || "${pipq[@]}" --timeout 20 "$pkg" || echo "could not install $pkg"
    done
}

export -f environment install_missing

log "Kiln GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
stage "environment" 30 bash -c environment
stage "install" 120 bash -c install_missing
export PYTHONPATH=/tmp/kiln-site:$PYTHONPATH
stage "nvcc: every kernel source" 90 \
    env KILN_REQUIRE_NVCC=1 "$PY" -m pytest -q -p no:cacheprovider tests/engine/test_kernels_nvcc.py
stage "pytest -m gpu (the CuPy half)" 300 \
    env KILN_REQUIRE_GPU=1 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rfE \
    --durations=15 --continue-on-collection-errors tests/engine
stage "bench: gpu_train_step.py" 150 "$PY" bench/gpu_train_step.py --rounds 11 --calls 20

log ""
log "=== summary ($(( $(date +%s) - START ))s of ${BUDGET}s) ==="
for line in "${SUMMARY[@]}"; do log "$line"; done

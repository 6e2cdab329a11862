#!/usr/bin/env bash
# The GPU checks in one command, for a machine with a CUDA GPU and perhaps no network:
#
#   bash benchmarks/gpu_run.sh [OUT_DIR] [WHEEL_DIR]
#
# OUT_DIR (default ./gpu-out) receives gpu_check.jsonl, one log per part (env, demo,
# gpu_check, pytest) and gpu_run.log with everything. WHEEL_DIR, if given, holds the wheels
# named in benchmarks/gpu_wheels.txt (for a machine that lacks them): they are installed
# into a temporary folder put on PYTHONPATH, and nothing else is changed.
#
# In order: nvidia-smi and the library versions; the demo model built in the background
# (CPU only, a few minutes, needed by the tests); benchmarks/gpu_check.py; the GPU tests
# (tests/test_trial_gpu.py, marked gpu). Each part has a timeout and the whole run fits in
# about 9 minutes on an H100/H200 (GPU_RUN_BUDGET_S, default 530 s, bounds the tests' share).
# Exit code 0 only when gpu_check measured every row and every GPU test passed.
set -uo pipefail

OUT=${1:-./gpu-out}
WHEELS=${2:-}
PYTHON=${PYTHON:-python3}
BUDGET_S=${GPU_RUN_BUDGET_S:-530}
CHECK_TIMEOUT_S=330  # gpu_check starts no row after 270 s; a row takes well under a minute
CHECK_BUDGET_S=270
DEMO_TIMEOUT_S=400

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$REPO" || exit 2
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
started=$SECONDS
elapsed() { echo "$((SECONDS - started)) s"; }

export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # nothing is downloaded; never wait on a network
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [[ -n "$WHEELS" ]]; then
    deps=$(mktemp -d "${TMPDIR:-/tmp}/paretune-gpu-deps.XXXXXX")
    echo "== installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $deps"
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --target "$deps" "$WHEELS"/*.whl; then
        echo "gpu_run: installing the wheels failed; going on with what is installed"
    fi
    export PYTHONPATH="$REPO:$deps${PYTHONPATH#"$REPO"}"
fi

{
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "== nvidia-smi"
    nvidia-smi || echo "gpu_run: nvidia-smi failed"
    echo "== versions and imports"
    "$PYTHON" - <<'EOF'
import importlib
import platform
from importlib.metadata import PackageNotFoundError, version

print("python", platform.python_version(), platform.machine())
for package in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "pydantic",
                "pydantic-core", "typing-extensions", "platformdirs", "tomli-w", "filelock",
                "pyyaml", "psutil", "numpy", "pytest"):
    try:
        print(f"  {package} {version(package)}")
    except PackageNotFoundError:
        print(f"  {package} MISSING")
import torch

print("torch CUDA", torch.version.cuda, "available:", torch.cuda.is_available())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"  {props.name}, {props.total_memory / 1e9:.1f} GB, compute capability "
          f"{props.major}.{props.minor}, bf16: {torch.cuda.is_bf16_supported()}")
for module in ("pydantic", "yaml", "platformdirs", "tomli_w", "filelock", "psutil",
               "transformers", "peft", "accelerate", "bitsandbytes", "pricing", "planner",
               "planner.simulation.simulate", "sweeps.trial.recipe", "sweeps.trial.isolation", "sweeps.trial.demo"):
    try:
        importlib.import_module(module)
        print(f"  import {module}: ok")
    except Exception as error:  # noqa: BLE001 - a report, not a check
        print(f"  import {module}: FAILED {type(error).__name__}: {error}")
EOF
} 2>&1 | tee "$OUT/env.log"

# The tests need the demo model (pretrained once on the CPU, then cached): build it while
# the GPU is busy with gpu_check. The tests wait for it through the cache's file lock.
echo "== $(elapsed): building the demo model in the background (demo.log)"
timeout -k 10 "$DEMO_TIMEOUT_S" "$PYTHON" -c \
    "from sweeps.trial.demo import ensure_demo; print(ensure_demo())" >"$OUT/demo.log" 2>&1 &
demo_pid=$!

echo "== $(elapsed): gpu_check (timeout ${CHECK_TIMEOUT_S} s)"
timeout -k 10 "$CHECK_TIMEOUT_S" "$PYTHON" benchmarks/gpu_check.py \
    --out "$OUT/gpu_check.jsonl" --time-budget-s "$CHECK_BUDGET_S" 2>&1 | tee "$OUT/gpu_check.log"
check_rc=${PIPESTATUS[0]}
echo "== $(elapsed): gpu_check exit code $check_rc"

echo "== $(elapsed): waiting for the demo model"
wait "$demo_pid"
demo_rc=$?
echo "== $(elapsed): demo build exit code $demo_rc"
tail -n 3 "$OUT/demo.log"

test_timeout_s=$((BUDGET_S - (SECONDS - started)))
((test_timeout_s > 240)) && test_timeout_s=240
((test_timeout_s < 90)) && test_timeout_s=90
echo "== $(elapsed): GPU tests (timeout ${test_timeout_s} s)"
timeout -k 10 "$test_timeout_s" "$PYTHON" -m pytest tests/test_trial_gpu.py -m gpu -rA \
    --durations=10 -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}

echo "== $(elapsed): done. gpu_check exit code $check_rc (0: every row measured; 1: some" \
    "failed or were skipped; 124: timed out), pytest exit code $test_rc"
[[ $check_rc -eq 0 && $test_rc -eq 0 ]]

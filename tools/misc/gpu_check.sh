#!/usr/bin/env bash
# The GPU check, one command on a fresh CUDA machine without internet:
# prints the versions and checks for a C compiler and Python.h (Triton
# builds its launcher with them), installs the wheels of
# tools/misc/download_gpu_wheels.sh into a private folder (the machine's
# own packages stay as they are), runs the Triton kernel check
# (slak_mm/analysis/triton_check.py: first and second weight-gradient
# call of a new shape against torch.nn.grad.conv2d_weight, the kernels
# timed against channels-last cuDNN, a module train step's peak memory;
# TRITON_PRINT_AUTOTUNING=1 logs every tuning), runs the CUDA tests
# (`pytest -m cuda` on the files in CUDA_TESTS below: Triton kernels
# against cuDNN, SLaK forward/backward through the 'triton' backend
# against 'reference', sparse training under AmpOptimWrapper in fp16 and
# bf16, mask updates on CUDA, SyncBN in a one-process NCCL group) and the
# CUDA benchmark (tools/analysis_tools/benchmark_cuda.py), and prints both benchmark
# tables. Works with whatever torch/Triton the machine has (no version is
# assumed). The test files import only torch, mmengine and slak_mm, no
# mmcv/mmdet/mmseg/mmpretrain (tests/test_gpu_check.py collects them with
# those blocked).
#
# Usage: bash tools/misc/gpu_check.sh [WHEELS] [OUT]
#   WHEELS  folder of wheels (default: gpu_wheels); may be absent when
#           mmengine, cv2 and pytest are importable already
#   OUT     folder for logs and JSON (default: work_dirs/gpu_check)
#   (relative paths are taken from the repository root)
# Environment: PYTHON (default python3), BENCH_ARGS (extra arguments for
# tools/analysis_tools/benchmark_cuda.py, e.g. "--skip-backbones"), GPU_CHECK_SITE (where
# the wheels are installed; default OUT/site-packages: point it elsewhere
# when OUT is a folder that gets copied back, it holds about 150 MB).
# Exit status: non-zero if the tests or the benchmark failed (the
# benchmark runs even when a test fails, so that its numbers are there).
set -uo pipefail

# Every test file with tests marked `cuda` (tests/test_gpu_check.py keeps
# this list complete).
CUDA_TESTS=(
  tests/test_amp_sparse.py
  tests/test_cuda_sparse.py
  tests/test_triton_backend.py
  tests/test_triton_dwconv.py
)

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# Relative folders are taken from the repository root.
cd "$REPO"
WHEELS=${1:-gpu_wheels}
OUT=${2:-work_dirs/gpu_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SITE=${GPU_CHECK_SITE:-$OUT/site-packages}
START=$SECONDS

echo "== environment"
# Triton compiles a small C launcher on first use: it needs a C compiler
# and Python's headers.
"$PYTHON" - <<'PY' || exit 1
import os
import shutil
import subprocess
import sys
import sysconfig
import torch
print('python', sys.version.split()[0], '| torch', torch.__version__,
      '| CUDA build', torch.version.cuda)
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton: not installed')
compiler = os.environ.get('CC') or shutil.which('gcc') or shutil.which('cc')
if compiler:
    version = subprocess.run([compiler, '--version'], capture_output=True,
                             text=True).stdout.splitlines()
    print('C compiler', compiler, '|', version[0] if version else '?')
header = os.path.join(sysconfig.get_paths()['include'], 'Python.h')
print('Python.h', header if os.path.exists(header) else 'missing')
if not compiler or not os.path.exists(header):
    sys.exit('Triton needs a C compiler (gcc) and Python.h to build its '
             'launcher: install them (e.g. gcc and python3-dev)')
if not torch.cuda.is_available():
    sys.exit('no CUDA device visible to torch: nothing to check here')
print('GPU', torch.cuda.get_device_name(0))
PY

echo "== installing wheels from $WHEELS into $SITE"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps \
    --target "$SITE" "$WHEELS"/*.whl || exit 1
elif "$PYTHON" -c 'import mmengine, cv2, pytest' 2> /dev/null; then
  echo "no wheels in $WHEELS; using the installed mmengine, cv2, pytest"
else
  echo "no wheels in $WHEELS and mmengine/cv2/pytest missing:" \
    "run tools/misc/download_gpu_wheels.sh where PyPI is reachable" >&2
  exit 1
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import slak_mm.ops.triton_dwconv as t, sys
sys.exit(0 if t.available("cuda") else "Triton kernels unavailable")' \
  || exit 1
echo "installed in $((SECONDS - START)) s"
# Every autotuning (key, timings, winner) in the logs.
export TRITON_PRINT_AUTOTUNING=1

echo "== Triton kernels: first and second weight-gradient call, vs cuDNN, memory"
"$PYTHON" -m slak_mm.analysis.triton_check --out "$OUT/triton_check.json" \
  2>&1 | tee "$OUT/triton_check.log"
KERNELS=${PIPESTATUS[0]}
echo "kernel check: exit $KERNELS after $((SECONDS - START)) s"

echo "== pytest -m cuda"
"$PYTHON" -m pytest -q -rs -m cuda -p no:cacheprovider "${CUDA_TESTS[@]}" \
  2>&1 | tee "$OUT/pytest_cuda.log"
TESTS=${PIPESTATUS[0]}
echo "tests: exit $TESTS after $((SECONDS - START)) s"

echo "== benchmark"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
"$PYTHON" tools/analysis_tools/benchmark_cuda.py --warmup 2 --repeats 5 \
  --out "$OUT/benchmark_cuda.json" ${BENCH_ARGS:-} 2>&1 \
  | tee "$OUT/benchmark_cuda.log"
BENCH=${PIPESTATUS[0]}
echo "benchmark: exit $BENCH after $((SECONDS - START)) s"

if [ "$KERNELS" -ne 0 ] || [ "$TESTS" -ne 0 ] || [ "$BENCH" -ne 0 ]; then
  exit 1
fi

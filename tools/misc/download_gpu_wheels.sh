#!/usr/bin/env bash
# Downloads the wheels that tools/misc/gpu_check.sh installs on a GPU machine
# that has Python 3.12, torch (with CUDA and Triton), timm and numpy but no
# internet: mmengine, the pure-Python packages it imports, OpenCV (mmengine
# imports cv2 in its hooks and visualizer, which slak_mm imports), PyYAML
# and pytest. Run it here, where PyPI is reachable; the folder is ignored
# by git.
#
# Usage: bash tools/misc/download_gpu_wheels.sh [DEST]   (default: gpu_wheels)
# Environment: PYTHON (default python3), GPU_PYTHON_VERSION (default 3.12).
# Wheels are for this machine's platform (Linux x86_64, manylinux).
set -euo pipefail

DEST=${1:-gpu_wheels}
PYTHON=${PYTHON:-python3}
PY_VERSION=${GPU_PYTHON_VERSION:-3.12}

PACKAGES=(
  mmengine==0.10.7
  addict
  termcolor
  yapf
  platformdirs
  rich
  markdown-it-py
  mdurl
  pygments
  pyyaml
  opencv-python-headless==4.11.0.86
  pytest
  pluggy
  iniconfig
  packaging
)

mkdir -p "$DEST"
# --no-deps: exactly the list above (numpy, torch, Triton and timm are on
# the GPU machine already); --only-binary: nothing to build there.
"$PYTHON" -m pip download --no-deps --only-binary=:all: \
  --python-version "$PY_VERSION" -d "$DEST" "${PACKAGES[@]}"
echo "wheels in $DEST:"
ls -l "$DEST"
du -sh "$DEST"

#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment with the pinned stack.
#
# Idempotent and quick when nothing changed: a stamp holding the hash of the
# requirement files skips everything. mmcv 2.1.0 has no wheel for torch 2.14.1,
# so it is built once from source with its ops and kept in a wheel directory
# named after the torch version (pip's own cache ignores the torch it was built
# against).
#
# Environment:
#   SLAK_VENV         virtual environment path (default: <repo>/.venv)
#   SLAK_WHEEL_CACHE  where the built mmcv wheel is kept
#                     (default: ~/.cache/slak_mm/wheels/torch-2.14.1-<python tag>)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${SLAK_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
PY_TAG="$($PYTHON -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
TORCH_VERSION="2.14.1"
WHEELS="${SLAK_WHEEL_CACHE:-$HOME/.cache/slak_mm/wheels/torch-$TORCH_VERSION-$PY_TAG}"

REQ_HASH="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/misc/setup_env.sh" | sha256sum | cut -c1-16)"
STAMP="$VENV/.slak_mm_env_$REQ_HASH"
if [[ -f "$STAMP" ]]; then
    exit 0
fi

echo "[setup_env] creating environment in $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade "pip<25"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt"

MMCV_WHEEL="$(ls "$WHEELS"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
    echo "[setup_env] building mmcv 2.1.0 with ops against torch $TORCH_VERSION (about 11 min on 2 cores)"
    mkdir -p "$WHEELS"
    BUILD_DIR="$(mktemp -d)"
    "${PIP[@]}" download -q --no-deps --no-binary :all: -d "$BUILD_DIR" mmcv==2.1.0
    tar -xzf "$BUILD_DIR"/mmcv-2.1.0.tar.gz -C "$BUILD_DIR"
    # mmcv 2.1.0 asks for C++14/17; torch 2.14's headers need C++20.
    sed -i 's/-std=c++1[47]/-std=c++20/g' "$BUILD_DIR"/mmcv-2.1.0/setup.py
    MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" "${PIP[@]}" wheel -q --no-build-isolation --no-deps \
        -w "$BUILD_DIR/dist" "$BUILD_DIR"/mmcv-2.1.0
    mv "$BUILD_DIR"/dist/mmcv-2.1.0-*.whl "$WHEELS"/
    rm -rf "$BUILD_DIR"
    MMCV_WHEEL="$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n1)"
fi
"${PIP[@]}" install -q "$MMCV_WHEEL"
"${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/toolkits.txt" \
    -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import torch, torchvision, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain, slak_mm; print('[setup_env] ok: torch', torch.__version__, 'mmcv', mmcv.__version__)"
rm -f "$VENV"/.slak_mm_env_*
touch "$STAMP"

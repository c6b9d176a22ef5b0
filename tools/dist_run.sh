#!/usr/bin/env bash
# Usage: bash tools/dist_run.sh SCRIPT GPUS [script arguments]
# Runs tools/SCRIPT in GPUS processes with torch.distributed.run and
# --launcher pytorch; dist_train.sh and dist_test.sh call it. Without CUDA
# the processes use the gloo backend on the CPU.
SCRIPT=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# The project's environment (.venv, made by `make env`) unless PYTHON is set.
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_DIR/.venv/bin/python" ]; then
        PYTHON="$REPO_DIR/.venv/bin/python"
    else
        PYTHON=python
    fi
fi

PYTHONPATH="$REPO_DIR":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/$SCRIPT" \
    --launcher pytorch \
    "${@:3}"

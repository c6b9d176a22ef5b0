#!/usr/bin/env bash
# Usage: bash tools/dist_train.sh CONFIG GPUS [train.py arguments]
# Without CUDA the processes use the gloo backend on the CPU.
CONFIG=$1
GPUS=$2
exec bash "$(dirname "$0")/dist_run.sh" train.py "$GPUS" "$CONFIG" "${@:3}"

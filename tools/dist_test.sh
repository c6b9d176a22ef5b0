#!/usr/bin/env bash
# Usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py arguments]
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
exec bash "$(dirname "$0")/dist_run.sh" test.py "$GPUS" "$CONFIG" \
    "$CHECKPOINT" "${@:4}"

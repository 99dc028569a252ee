#!/usr/bin/env bash
# bash dist_test.sh CONFIG CHECKPOINT GPUS [test.py arguments...]: test.py on GPUS processes per
# node with torchrun (CPU processes over gloo without a GPU; several nodes as in dist_train.sh).
# One process on one node runs test.py directly, without a launcher (scripts/torchrun.sh).
set -euo pipefail
if [ $# -lt 3 ] || ! [[ "$3" =~ ^[0-9]+$ ]]; then
    echo "usage: bash dist_test.sh CONFIG CHECKPOINT GPUS [args...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
LAUNCHER=pytorch
if [ "$GPUS" -eq 1 ] && [ "${NNODES:-1}" -eq 1 ]; then LAUNCHER=none; fi
exec bash "$HERE/../scripts/torchrun.sh" "$GPUS" "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher "$LAUNCHER" "$@"

#!/usr/bin/env bash
# bash dist_train.sh CONFIG GPUS [train.py arguments...]: train.py on GPUS processes per node with
# torchrun (CPU processes over gloo without a GPU; several nodes: NNODES, NODE_RANK, MASTER_ADDR, PORT).
# One process on one node runs train.py directly, without a launcher (scripts/torchrun.sh).
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: bash dist_train.sh CONFIG GPUS [args...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1
GPUS=$2
shift 2
LAUNCHER=pytorch
if [ "$GPUS" -eq 1 ] && [ "${NNODES:-1}" -eq 1 ]; then LAUNCHER=none; fi
exec bash "$HERE/../scripts/torchrun.sh" "$GPUS" "$HERE/train.py" "$CONFIG" --launcher "$LAUNCHER" "$@"

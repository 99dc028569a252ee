#!/usr/bin/env bash
# bash dist_train.sh CONFIG GPUS [train.py arguments...]: train.py on GPUS processes per node with
# torchrun (CPU processes over gloo without a GPU; several nodes: NNODES, NODE_RANK, MASTER_ADDR, PORT).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash dist_train.sh CONFIG GPUS [args...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1
GPUS=$2
shift 2
exec bash "$HERE/../scripts/torchrun.sh" "$GPUS" "$HERE/train.py" "$CONFIG" --launcher pytorch "$@"

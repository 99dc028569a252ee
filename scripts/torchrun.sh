#!/usr/bin/env bash
# Run a Python entry point on NPROC processes per node with torchrun, using the project's .venv
# when there is one (or $PYTHON). Without a GPU the processes run on the CPU and the entry points
# use gloo. Several nodes: set NNODES, NODE_RANK, MASTER_ADDR and PORT (or MASTER_PORT).
#
# One process on one node runs the entry point directly, without torchrun: nothing to coordinate,
# and the entry point's own error message stays the last thing printed.
#
#   bash scripts/torchrun.sh NPROC SCRIPT [args...]
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
    echo "usage: torchrun.sh NPROC SCRIPT [args...] (NPROC: processes per node, a positive number)" >&2
    exit 2
fi
NPROC=$1
SCRIPT=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
CORES=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( CORES / NPROC > 0 ? CORES / NPROC : 1 ))}

if [ "$NPROC" -eq 1 ] && [ "${NNODES:-1}" -eq 1 ]; then
    exec "$PYTHON" "$SCRIPT" "$@"
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-${MASTER_PORT:-29500}}" --nproc_per_node="$NPROC" \
    "$SCRIPT" "$@"

#!/usr/bin/env bash
# Launch main.py on NGPUS processes per node with torchrun (CPU processes over gloo when there is
# no GPU). Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT (or MASTER_PORT).
#
#   bash train.sh 8 --model nextvit_small --batch-size 256 --lr 5e-4 --warmup-epochs 20 \
#       --weight-decay 0.1 --data-path /path/to/imagenet
#
# As in the original, runs go to ../nextvit_cls_exp/<MMDD_HHMMSS> unless --output-dir is given.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: bash train.sh NGPUS [main.py arguments...]" >&2
    exit 2
fi
GPUS=$1
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python3; fi
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-${MASTER_PORT:-29500}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / GPUS > 0 ? $(nproc) / GPUS : 1 ))}

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$HERE/main.py" --output-dir "$HERE/../nextvit_cls_exp/$(date +%m%d_%H%M%S)" --dist-eval "$@"

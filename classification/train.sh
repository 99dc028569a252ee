#!/usr/bin/env bash
# bash train.sh NGPUS [main.py arguments...]: main.py on NGPUS processes per node with torchrun
# (CPU processes over gloo without a GPU; several nodes: NNODES, NODE_RANK, MASTER_ADDR, PORT).
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
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GPUS=$1
shift
exec bash "$HERE/../scripts/torchrun.sh" "$GPUS" "$HERE/main.py" \
    --output-dir "$HERE/../nextvit_cls_exp/$(date +%m%d_%H%M%S)" --dist-eval "$@"

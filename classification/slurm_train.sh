#!/usr/bin/env bash
# bash slurm_train.sh PARTITION JOB_NAME NGPUS [main.py arguments...]: main.py as NGPUS SLURM tasks
# (one per GPU) with srun; main.py takes its rank from SLURM's variables. GPUS_PER_NODE (default:
# NGPUS, at most 8), CPUS_PER_TASK (default 5) and SRUN_ARGS (more srun options) can be set.
#
#   bash slurm_train.sh gpu nextvit_s 16 --model nextvit_small --batch-size 128 --lr 5e-4 \
#       --warmup-epochs 20 --weight-decay 0.1 --data-path /path/to/imagenet
#
# As with train.sh, runs go to ../nextvit_cls_exp/<MMDD_HHMMSS> unless --output-dir is given.
set -euo pipefail
if [ $# -lt 3 ] || ! [[ "$3" =~ ^[0-9]+$ ]]; then
    echo "usage: bash slurm_train.sh PARTITION JOB_NAME NGPUS [main.py arguments...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PARTITION=$1
JOB_NAME=$2
GPUS=$3
shift 3
exec bash "$HERE/../scripts/srun.sh" "$PARTITION" "$JOB_NAME" "$GPUS" "$HERE/main.py" \
    --output-dir "$HERE/../nextvit_cls_exp/$(date +%m%d_%H%M%S)" --dist-eval "$@"

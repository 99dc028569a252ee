#!/usr/bin/env bash
# bash slurm_train.sh PARTITION JOB_NAME CONFIG NGPUS [train.py arguments...]: train.py as NGPUS SLURM
# tasks (one per GPU) with srun and mmengine's slurm launcher. GPUS_PER_NODE (default: NGPUS, at
# most 8), CPUS_PER_TASK (default 5) and SRUN_ARGS (more srun options) can be set.
set -euo pipefail
if [ $# -lt 4 ] || ! [[ "$4" =~ ^[0-9]+$ ]]; then
    echo "usage: bash slurm_train.sh PARTITION JOB_NAME CONFIG NGPUS [train.py arguments...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=$4
shift 4
exec bash "$HERE/../scripts/srun.sh" "$PARTITION" "$JOB_NAME" "$GPUS" "$HERE/train.py" "$CONFIG" --launcher slurm "$@"

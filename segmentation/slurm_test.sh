#!/usr/bin/env bash
# bash slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT NGPUS [test.py arguments...]: test.py as
# NGPUS SLURM tasks (one per GPU) with srun and mmengine's slurm launcher. GPUS_PER_NODE (default:
# NGPUS, at most 8), CPUS_PER_TASK (default 5) and SRUN_ARGS (more srun options) can be set.
set -euo pipefail
if [ $# -lt 5 ] || ! [[ "$5" =~ ^[0-9]+$ ]]; then
    echo "usage: bash slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT NGPUS [test.py arguments...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=$5
shift 5
exec bash "$HERE/../scripts/srun.sh" "$PARTITION" "$JOB_NAME" "$GPUS" "$HERE/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher slurm "$@"

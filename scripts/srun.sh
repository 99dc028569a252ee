#!/usr/bin/env bash
# Run a Python entry point as NTASKS SLURM tasks, one per GPU, with srun (the slurm_*.sh scripts of
# classification/, detection/ and segmentation/ call this). The entry points read their rank from
# SLURM's variables. Environment: GPUS_PER_NODE (default: NTASKS, at most 8), CPUS_PER_TASK
# (default 5), SRUN_ARGS (more srun options, e.g. "--time=2-00:00:00 --qos=high"), PYTHON.
#
#   bash scripts/srun.sh PARTITION JOB_NAME NTASKS SCRIPT [args...]
set -euo pipefail
if [ $# -lt 4 ] || ! [[ "$3" =~ ^[0-9]+$ ]] || [ "$3" -lt 1 ]; then
    echo "usage: srun.sh PARTITION JOB_NAME NTASKS SCRIPT [args...] (NTASKS: GPUs in all, a positive number)" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
NTASKS=$3
SCRIPT=$4
shift 4
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( NTASKS < 8 ? NTASKS : 8 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
if ! command -v srun >/dev/null 2>&1; then
    echo "srun not found: the slurm_*.sh scripts submit to a SLURM cluster (on one machine use train.sh or" \
        "dist_train.sh)" >&2
    exit 1
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_TASK}

# SRUN_ARGS unquoted on purpose: it holds several options
# shellcheck disable=SC2086
exec srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$NTASKS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS} \
    "$PYTHON" -u "$SCRIPT" "$@"

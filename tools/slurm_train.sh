#!/usr/bin/env bash
# Train on a Slurm cluster, one task per GPU (GPUS, GPUS_PER_NODE, ... as in slurm_run.sh):
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options]
set -euo pipefail
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"

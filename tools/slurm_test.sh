#!/usr/bin/env bash
# Test on a Slurm cluster, one task per GPU (GPUS, GPUS_PER_NODE, ... as in slurm_run.sh):
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py options]
set -euo pipefail
exec bash "$(dirname "$0")/slurm_run.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"

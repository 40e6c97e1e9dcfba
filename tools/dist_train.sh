#!/usr/bin/env bash
# Train with NUM_PROCESSES processes per node via torchrun (GPUs, or gloo on CPU):
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [tools/train.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" train.py "$2" "$1" "${@:3}"

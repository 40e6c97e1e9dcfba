#!/usr/bin/env bash
# Run a tool in NUM_PROCESSES processes per node with torchrun (GPUs, or gloo on CPU):
#   bash tools/dist_run.sh TOOL.py NUM_PROCESSES [tool arguments]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
source "$(dirname "$0")/python_for_tools.sh"
TOOL=$1
NUM_PROCESSES=$2
"$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NUM_PROCESSES" \
    "$TOOLS_DIR/$TOOL" "${@:3}" --launcher pytorch

#!/usr/bin/env bash
# Train with NUM_PROCESSES processes per node via torchrun (GPUs, or gloo on CPU):
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [tools/train.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
CONFIG=$1
NUM_PROCESSES=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
# The project's .venv (tools/setup_env.sh) unless PYTHON names another interpreter.
VENV_PYTHON="$(dirname "$0")/../.venv/bin/python"
[[ -x "$VENV_PYTHON" ]] && DEFAULT_PYTHON=$VENV_PYTHON || DEFAULT_PYTHON=python
PYTHON=${PYTHON:-$DEFAULT_PYTHON}

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NUM_PROCESSES" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"

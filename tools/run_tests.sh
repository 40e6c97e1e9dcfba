#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole test suite, one pytest
# worker per logical CPU (pytest-xdist; pass -n 0 to run in this process); the 15 slowest
# tests are listed at the end. One OpenMP thread per process unless you set another
# count: the tests' tensors are small, and on a small busy machine idle threads waiting
# for a core slow everything down (docs/training_threads.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -n auto --durations=15 "$@"

#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole test suite in one
# process (pass -n auto for one pytest-xdist worker per logical CPU: faster, but on
# 2026-12-02 a worker died in three full runs in a row, in a different subprocess-heavy
# test each time, cause not found); the 15 slowest tests are listed at the end. One OpenMP thread per process unless you set another
# count: the tests' tensors are small, and on a small busy machine idle threads waiting
# for a core slow everything down (docs/training_threads.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -n 0 --durations=15 "$@"

#!/usr/bin/env bash
# The test suite at the lower bounds (CI's second environment): set up .venv-lower
# (tools/setup_lower_env.sh, idempotent), then run every test but the slow ones, one
# worker per logical CPU; arguments go to pytest (e.g. -m '' to run the slow ones too).
# Tests that need a newer torch or runtime skip, and -ra prints why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_lower_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv-lower/bin/python -m pytest -n auto -m 'not slow' --durations=15 "$@"

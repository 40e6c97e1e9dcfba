#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole test suite; the 15
# slowest tests are listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest --durations=15 "$@"

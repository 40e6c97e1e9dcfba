#!/usr/bin/env bash
# The README's first command: set up .venv, then run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python tools/demo.py "$@"

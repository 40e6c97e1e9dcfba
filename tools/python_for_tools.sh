# Sourced by the launch scripts: PYTHON is the project's .venv interpreter
# (tools/setup_env.sh) unless the caller set PYTHON, and the repository is on PYTHONPATH.
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$TOOLS_DIR/../.venv/bin/python" ]]; then PYTHON="$TOOLS_DIR/../.venv/bin/python"
    else PYTHON=python; fi
fi
export PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}"

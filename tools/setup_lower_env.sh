#!/usr/bin/env bash
# Create .venv-lower: the oldest stack mmrepvgg declares and CI tries (requirements/
# lowerbound.txt: Python 3.10, torch 2.1.2, numpy 1.26.4, mmengine 0.10.4, mmcv-lite 2.1.0,
# mmpretrain 1.2.0, mmseg 1.2.2, mmdet 3.3.0) with the test requirements, and the checkout
# installed with --no-deps. PYTHON picks the interpreter; by default python3.10 on PATH, or
# pyenv's newest 3.10. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if command -v pyenv > /dev/null && PYENV_VERSION=$(pyenv latest 3.10 2> /dev/null); then
        PYTHON="$(PYENV_VERSION=$PYENV_VERSION pyenv which python3.10)"
    else
        PYTHON=python3.10
    fi
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version' 2> /dev/null \
    || { echo "setup_lower_env.sh: $PYTHON is not a Python 3.10; set PYTHON=/path/to/python3.10" >&2
         exit 1; }
VENV=${VENV:-.venv-lower} RUNTIME=requirements/lowerbound.txt PYTHON="$PYTHON" \
    exec bash tools/setup_env.sh

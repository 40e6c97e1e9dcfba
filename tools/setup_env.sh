#!/usr/bin/env bash
# Create a virtualenv (if missing) and install mmrepvgg with a pinned runtime set and the test
# requirements, the seg and det extras (mmsegmentation, mmdetection) included, so that the
# tests cover them. Safe to re-run: pip skips what is already installed. No pip cache: the
# CUDA builds of torch would be kept twice on disk.
#   VENV     the folder (default .venv)
#   RUNTIME  the pinned set (default requirements/runtime.txt; requirements/lowerbound.txt
#            is the oldest stack CI tries, tools/setup_lower_env.sh)
#   PYTHON   the interpreter that creates the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
RUNTIME=${RUNTIME:-requirements/runtime.txt}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() {
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "$@" \
        > "$VENV/pip.log" 2>&1 \
        || { cat "$VENV/pip.log"; echo "setup_env.sh: pip install $* failed" >&2; exit 1; }
}
pip_install -r "$RUNTIME" -r requirements/tests.txt -r requirements/seg.txt \
    -r requirements/det.txt
pip_install --no-deps -e .
"$VENV/bin/python" -c "import mmrepvgg, torch, numpy, mmcv; print('mmrepvgg', mmrepvgg.__version__, \
'torch', torch.__version__, 'numpy', numpy.__version__, 'mmcv', mmcv.__version__)"

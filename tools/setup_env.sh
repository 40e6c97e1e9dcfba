#!/usr/bin/env bash
# Create .venv (if missing) and install mmrepvgg with its pinned runtime and test
# requirements, the seg and det extras (mmsegmentation, mmdetection) included, so that the
# tests cover them. Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() {
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" > .venv/pip.log 2>&1 \
        || { cat .venv/pip.log; echo "setup_env.sh: pip install $* failed" >&2; exit 1; }
}
pip_install -r requirements/runtime.txt -r requirements/tests.txt -r requirements/seg.txt \
    -r requirements/det.txt
pip_install --no-deps -e .
.venv/bin/python -c "import mmrepvgg, torch; print('mmrepvgg', mmrepvgg.__version__, 'torch', torch.__version__)"

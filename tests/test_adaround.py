"""The learned-rounding specification (tests/adaround_cases.py), run by pytest in a
process and session of its own: with those cases inside a shared test process, a later
test in that process crashed (2 of 2 runs of a small set; none without them); the cause
was not found. A failing case fails this test and prints pytest's report."""
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow  # ~1-2 min: the cases, in a fresh interpreter
def test_every_learned_rounding_case_passes_in_a_process_of_its_own():
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p',
                          'no:cacheprovider', 'tests/adaround_cases.py'],
                         capture_output=True, text=True, cwd=REPO_ROOT,
                         start_new_session=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert ' passed' in run.stdout and ' failed' not in run.stdout

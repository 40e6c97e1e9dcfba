"""Peak memory of every bad input the tools refuse (the cases of docs/bad_inputs.md,
built by tests/test_checkpoint_bad_inputs.py), each run in this one process after the
imports, with the kernel's peak mark reset before it (:mod:`lab.peak_memory`). Linux only.

    python benchmarks/bad_input_memory.py [--match TEXT]
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / 'tests')]  # the cases and their fixtures

import test_checkpoint_bad_inputs as cases  # noqa: E402
from lab.peak_memory import peak_rss_mib  # noqa: E402
from lab.report import markdown_table  # noqa: E402
from mmrepvgg.datasets import prepare_digits  # noqa: E402
from mmrepvgg.deploy._host_cpu import host_cpu  # noqa: E402


def measure(match: str = '') -> list:
    """``[(tool, case, exit code, RSS before in MiB, peak RSS in MiB)]`` of the bad-input
    cases whose name holds ``match``."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        workspace = Path(root) / 'workspace'
        prepare_digits(str(workspace / 'data' / 'digits'))
        for index, (tool, name, _) in enumerate(cases.BAD_INPUTS):
            if match not in name or name in cases.UNBUILDABLE:
                continue
            folder = Path(root) / f'case{index}'
            folder.mkdir()
            with peak_rss_mib() as rss_mib:
                result = cases.run_case(tool, name, folder, workspace)
            rows.append((tool, name, result.exit_code, *rss_mib))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--match', default='', help='only the cases whose name holds this')
    args = parser.parse_args(argv)
    rows = measure(args.match)
    print(f'CPU: {host_cpu().describe()}; load average {os.getloadavg()[0]:.1f}')
    print(markdown_table(
        ('tool', 'bad input', 'exit', 'RSS before (MiB)', 'peak (MiB)', 'growth (MiB)'),
        [(tool, name, code, f'{before:.0f}', f'{peak:.0f}', f'{peak - before:.0f}')
         for tool, name, code, before, peak in rows]))
    growth = max(peak - before for *_, before, peak in rows)
    print(f'{len(rows)} cases; the largest growth over the RSS before a case: {growth:.0f} MiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())

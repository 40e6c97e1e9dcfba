"""lab.peak_memory reads the kernel's high-water mark of the block alone, and
bad_input_memory.py prints a row per refused input (references: the bytes a block
allocates; the cases' own exit code)."""
import subprocess
import sys
from pathlib import Path

import bad_input_memory

LAB_PARENT = Path(__file__).resolve().parents[1]
# Run in a small fresh process: in a large one (a test worker holding GBs) the kernel may
# reclaim mapped file pages during the block, which lowers the RSS the peak is read against.
BLOCKS = '''
import numpy as np
from lab.peak_memory import MIB, peak_rss_mib
with peak_rss_mib() as first:
    held = np.ones(200 * MIB // 8)  # ones, not zeros: every page is touched
    del held
with peak_rss_mib() as second:
    small = np.ones(MIB // 8)
    del small
print(first[1] - first[0], second[1] - second[0])
'''


def block_growths_mib():
    printed = subprocess.run([sys.executable, '-c', BLOCKS], cwd=LAB_PARENT, check=True,
                             capture_output=True, text=True).stdout
    return [float(value) for value in printed.split()]


def test_a_block_peak_counts_what_it_allocated_and_not_an_earlier_peak():
    big_block, later_small_block = block_growths_mib()
    assert 195 <= big_block < 230
    assert later_small_block < 10  # the 200 MiB peak before it is not counted


def test_the_script_prints_each_refused_input_with_its_memory(capsys):
    assert bad_input_memory.main(['--match', 'SRC is empty']) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith('CPU: ')
    row = next(line for line in printed if 'SRC is empty' in line)
    tool, name, exit_code, before, peak, growth = [cell.strip() for cell in
                                                   row.strip('|').split('|')]
    assert (tool, exit_code) == ('reparameterize_repvgg', '1')
    assert float(peak) >= float(before)
    assert abs(float(growth) - (float(peak) - float(before))) <= 1  # each rounded to 1 MiB

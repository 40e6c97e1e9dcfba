"""lab.peak_memory reads the kernel's high-water mark of the block alone, and
bad_input_memory.py prints a row per refused input (references: the bytes a block
allocates; the cases' own exit code)."""
import numpy as np

import bad_input_memory
from lab.peak_memory import peak_rss_mib

MIB = 2 ** 20


def test_a_block_peak_counts_what_it_allocated():
    with peak_rss_mib() as rss_mib:
        held = np.ones(200 * MIB // 8)  # ones, not zeros: every page is touched
        del held
    before, peak = rss_mib
    assert 190 <= peak - before < 260  # within pages the allocator already held


def test_an_earlier_peak_is_not_counted_in_a_later_block():
    with peak_rss_mib():
        held = np.ones(200 * MIB // 8)
        del held
    with peak_rss_mib() as rss_mib:
        small = np.ones(MIB // 8)
        del small
    before, peak = rss_mib
    assert peak - before < 20


def test_the_script_prints_each_refused_input_with_its_memory(capsys):
    assert bad_input_memory.main(['--match', 'SRC is empty']) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith('CPU: ')
    row = next(line for line in printed if 'SRC is empty' in line)
    tool, name, exit_code, before, peak, growth = [cell.strip() for cell in
                                                   row.strip('|').split('|')]
    assert (tool, exit_code) == ('reparameterize_repvgg', '1')
    assert float(peak) >= float(before) and float(growth) == float(peak) - float(before)

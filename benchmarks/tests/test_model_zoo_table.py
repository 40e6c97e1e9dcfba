"""The README's model zoo table, generated from configs/metafile.yml by
benchmarks/model_zoo_table.py: one row per variant, with the published figures (read back
through mmrepvgg.published)."""
from mmrepvgg.models import ARCH_SETTINGS
from mmrepvgg.published import PUBLISHED

from conftest import load_tool


def test_model_zoo_table_has_one_row_per_variant_with_metafile_figures():
    table = load_tool('benchmarks/model_zoo_table.py').model_zoo_table().splitlines()
    rows = [line for line in table[2:] if line.startswith('| `repvgg-')]
    assert len(rows) == len(ARCH_SETTINGS)
    d2se = PUBLISHED['D2se']
    d2se_row = next(row for row in rows if 'D2se' in row)
    assert f'| {d2se.params_m_train:g} / {d2se.params_m_deploy:g} |' in d2se_row
    assert f'| {d2se.top1:.2f} |' in d2se_row

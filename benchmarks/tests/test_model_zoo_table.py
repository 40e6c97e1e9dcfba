"""The README's model zoo table, generated from configs/metafile.yml by
benchmarks/model_zoo_table.py: one row per variant, with the published figures of both
forms."""
from mmrepvgg.model_zoo import _zoo_models
from mmrepvgg.models import ARCH_SETTINGS

from conftest import REPO_ROOT, load_tool


def test_model_zoo_table_has_one_row_per_variant_with_metafile_figures():
    table = load_tool('benchmarks/model_zoo_table.py').model_zoo_table().splitlines()
    rows = [line for line in table[2:] if line.startswith('| `repvgg-')]
    assert len(rows) == len(ARCH_SETTINGS)
    train, deploy = (next(model for model in _zoo_models().values()
                          if model.arch == 'D2se' and model.deploy == form)
                     for form in (False, True))
    d2se_row = next(row for row in rows if 'D2se' in row)
    assert f'| {train.params_m:g} / {deploy.params_m:g} |' in d2se_row
    assert f'| {train.top1:.2f} |' in d2se_row


def test_readme_model_zoo_table_is_the_generated_one():
    table = load_tool('benchmarks/model_zoo_table.py').model_zoo_table()
    with open(f'{REPO_ROOT}/README.md', encoding='utf-8') as stream:
        readme = stream.read()
    assert f'\n{table}\n' in readme, \
        'README.md: the model zoo table is stale; paste `python benchmarks/model_zoo_table.py`'

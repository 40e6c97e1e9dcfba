"""Print the README's results table of the model zoo, generated from configs/metafile.yml.

    python benchmarks/model_zoo_table.py > table.md
"""
from mmrepvgg.model_zoo import _zoo_models, resource_root

COLUMNS = ('Name (train form)', 'Epochs', 'Params (M) train / deploy',
           'FLOPs (G) train / deploy', 'Top-1 (%)', 'Top-5 (%)', 'Config train / deploy',
           'Download')


def model_zoo_table() -> str:
    """The markdown table: one row per variant, train and deploy forms side by side."""
    by_arch = {}
    for model in _zoo_models().values():
        by_arch.setdefault(model.arch, {})['deploy' if model.deploy else 'train'] = model
    prefix = resource_root() + '/'
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    for arch, forms in by_arch.items():
        train, deploy = forms['train'], forms['deploy']
        cells = (f'`{train.name}`', str(train.epochs), f'{train.params_m:g} / {deploy.params_m:g}',
                 f'{train.gmacs:g} / {deploy.gmacs:g}', f'{train.top1:.2f}',
                 f'{train.top5:.2f}',
                 f'[train]({train.config.removeprefix(prefix)}) / '
                 f'[deploy]({deploy.config.removeprefix(prefix)})',
                 f'[model]({train.weights})')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(model_zoo_table())

"""The published model zoo of ``configs/metafile.yml``: each variant's train and deploy names
with their config, figures and train-form checkpoint URL. Importing the module registers the
zoo with mmpretrain's ``ModelHub``."""
import fnmatch
import functools
import os
import re
from typing import Dict, List, NamedTuple, Optional

import yaml
from mmpretrain.apis import ModelHub

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class _ZooModel(NamedTuple):
    """One named model, as published."""
    name: str
    arch: str
    deploy: bool
    config: str  # an absolute path
    weights: str  # the train-form checkpoint URL
    epochs: int
    params_m: float  # millions, 1000-class head included
    gmacs: float  # the published "FLOPs": G multiply-adds at 224x224
    top1: float  # % on ImageNet-1k val
    top5: float


def resource_root() -> str:
    """The folder of ``configs/``, ``tools/`` and ``model-index.yml``: the wheel's ``.mim``, or
    the checkout."""
    mim_root = os.path.join(PACKAGE_DIR, '.mim')
    return mim_root if os.path.isdir(mim_root) else os.path.dirname(PACKAGE_DIR)


def _zoo_model(entry: dict, root: str) -> _ZooModel:
    metrics = entry['Results'][0]['Metrics']
    metadata = entry['Metadata']
    return _ZooModel(name=entry['Name'],
                     arch=re.match(r'repvgg-([A-Za-z0-9]+)_', entry['Name']).group(1),
                     deploy='_deploy_' in entry['Name'],
                     config=os.path.join(root, entry['Config']),
                     weights=entry.get('Weights') or entry['Converted From']['Weights'],
                     epochs=int(metadata['Epochs']),
                     params_m=metadata['Parameters'] / 1e6,
                     gmacs=metadata['FLOPs'] / 1e9,
                     top1=float(metrics['Top 1 Accuracy']),
                     top5=float(metrics['Top 5 Accuracy']))


@functools.lru_cache(maxsize=None)
def _zoo_models() -> Dict[str, _ZooModel]:
    root = resource_root()
    with open(os.path.join(root, 'configs', 'metafile.yml')) as stream:
        entries = yaml.safe_load(stream)['Models']
    return {entry['Name'].lower(): _zoo_model(entry, root) for entry in entries}


def list_models(pattern: Optional[str] = None) -> List[str]:
    """The zoo's names for :func:`mmrepvgg.get_model`, sorted and lower case as
    ``mmpretrain.list_models`` gives them: all, or those starting with the shell-style
    ``pattern`` (``'repvgg-a0*'``, any case)."""
    names = list(_zoo_models())
    if pattern is not None:
        # mmpretrain's rule: a pattern matches names with any ending.
        names = fnmatch.filter(names, pattern.lower() + '*')
    return sorted(names)


def find_model(name: str) -> Optional[_ZooModel]:
    """The zoo model of ``name`` (any letter case), or None."""
    return _zoo_models().get(name.lower())


def checkpoint_source(name_or_path_or_url: str) -> str:
    """A zoo name's published train-form checkpoint URL; a path or URL unchanged."""
    model = find_model(name_or_path_or_url)
    return model.weights if model is not None else name_or_path_or_url


# So that mmpretrain's list_models('repvgg*') and get_model(name, pretrained=True) find the
# zoo (deploy names carry no weights there: mmrepvgg.get_model converts them).
ModelHub.register_model_index(os.path.join(resource_root(), 'model-index.yml'),
                              config_prefix=resource_root())

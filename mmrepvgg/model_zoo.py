"""The published RepVGG model zoo, read from ``configs/metafile.yml``.

The metafile (listed by ``model-index.yml``, as in OpenMMLab projects) is the one source of
the published figures, the config of each name and the published checkpoint URLs. Each of
the 12 variants has two names, e.g. ``repvgg-A0_3rdparty_4xb64-coslr-120e_in1k`` (train
form, its config under ``configs/``) and ``repvgg-A0_deploy_3rdparty_4xb64-coslr-120e_in1k``
(deploy form, ``configs/deploy/``); both name the published train-form checkpoint, which
the deploy name reaches through ``Converted From``. Pure data: the checkpoint layer reads
zoo names through :func:`checkpoint_source`.

Installed from a wheel, ``configs/``, ``tools/`` and ``model-index.yml`` ship in the
package's ``.mim`` folder (as mmpretrain ships them, for ``mim train``); in a checkout or an
editable install they are read from the repository.
"""
import fnmatch
import functools
import os
import re
from typing import Dict, List, NamedTuple, Optional

import yaml

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
MODEL_INDEX = 'model-index.yml'
METAFILE = os.path.join('configs', 'metafile.yml')
# The metafile states Parameters and FLOPs as counts; the published table in M and G.
MILLION, GIGA = 1e6, 1e9


class ZooModel(NamedTuple):
    """One named model of the zoo.

    Attributes:
        name: as in the metafile, e.g. ``'repvgg-A0_3rdparty_4xb64-coslr-120e_in1k'``.
        arch: the variant, e.g. ``'A0'``.
        deploy: whether the name stands for the deploy (re-parameterized) form.
        config: absolute path of its config file.
        weights: URL of the published train-form checkpoint.
        epochs: training epochs of the published recipe.
        params_m: parameters in millions, 1000-class head included.
        gmacs: the published "FLOPs": multiply-adds in G (1e9) at 224x224.
        top1, top5: published ImageNet-1k val accuracy in %.
    """
    name: str
    arch: str
    deploy: bool
    config: str
    weights: str
    epochs: int
    params_m: float
    gmacs: float
    top1: float
    top5: float


def resource_root() -> str:
    """The folder holding ``configs/``, ``tools/`` and ``model-index.yml``: the package's
    ``.mim`` when installed from a wheel, else the repository checkout."""
    mim_root = os.path.join(PACKAGE_DIR, '.mim')
    return mim_root if os.path.isdir(mim_root) else os.path.dirname(PACKAGE_DIR)


def _zoo_model(entry: dict, root: str) -> ZooModel:
    metrics = entry['Results'][0]['Metrics']
    metadata = entry['Metadata']
    weights = entry.get('Weights') or entry['Converted From']['Weights']
    return ZooModel(name=entry['Name'],
                    arch=re.match(r'repvgg-([A-Za-z0-9]+)_', entry['Name']).group(1),
                    deploy='_deploy_' in entry['Name'],
                    config=os.path.join(root, entry['Config']),
                    weights=weights,
                    epochs=int(metadata['Epochs']),
                    params_m=metadata['Parameters'] / MILLION,
                    gmacs=metadata['FLOPs'] / GIGA,
                    top1=float(metrics['Top 1 Accuracy']),
                    top5=float(metrics['Top 5 Accuracy']))


@functools.lru_cache(maxsize=None)
def zoo_models() -> Dict[str, ZooModel]:
    """Every model of the metafile, in its order, keyed by lower-case name (mmpretrain's
    ``list_models`` spelling)."""
    root = resource_root()
    with open(os.path.join(root, METAFILE)) as stream:
        entries = yaml.safe_load(stream)['Models']
    return {entry['Name'].lower(): _zoo_model(entry, root) for entry in entries}


def list_models(pattern: Optional[str] = None) -> List[str]:
    """The zoo's model names, sorted, as ``mmpretrain.list_models`` gives them (lower case):
    all of them, or those starting with the shell-style ``pattern`` (``'repvgg-a0*'``,
    ``'*deploy'``; any letter case), each one a name :func:`mmrepvgg.get_model` takes."""
    names = list(zoo_models())
    if pattern is not None:
        # mmpretrain's rule: a pattern matches names with any ending.
        names = fnmatch.filter(names, pattern.lower() + '*')
    return sorted(names)


def find_model(name: str) -> Optional[ZooModel]:
    """The zoo model of ``name`` (any letter case), or None."""
    return zoo_models().get(name.lower())


def checkpoint_source(name_or_path_or_url: str) -> str:
    """What a tool should read for a checkpoint argument: a zoo name becomes the URL of its
    published (train-form) checkpoint; a path or URL is returned unchanged."""
    model = find_model(name_or_path_or_url)
    return model.weights if model is not None else name_or_path_or_url


@functools.lru_cache(maxsize=None)
def register_model_zoo() -> None:
    """Register the zoo with mmpretrain's ``ModelHub`` (once per process), so that
    ``mmpretrain.list_models('repvgg*')`` lists it and ``mmpretrain.get_model(name,
    pretrained=True)`` finds the train-form weights (deploy names carry none there, as
    mmpretrain would load train tensors into a deploy model; use
    :func:`mmrepvgg.apis.get_model`, which converts)."""
    from mmpretrain.apis import ModelHub
    root = resource_root()
    ModelHub.register_model_index(os.path.join(root, MODEL_INDEX), config_prefix=root)

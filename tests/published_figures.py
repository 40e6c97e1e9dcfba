"""Test helper: the published figures of the RepVGG variants (OpenMMLab model zoo and the
paper) per variant, as read from the model zoo's metafile (:mod:`mmrepvgg.model_zoo`).

Params in millions and FLOPs in G multiply-adds (as OpenMMLab counts them) at 224x224 with
the 1000-class linear head; top-1/top-5 in % on ImageNet-1k val.
"""
from typing import Dict, NamedTuple

from mmrepvgg.model_zoo import _zoo_models


class PublishedFigures(NamedTuple):
    epochs: int
    params_m_train: float  # parameters in millions
    params_m_deploy: float
    gmacs_train: float  # the published "FLOPs": G (1e9) multiply-adds at 224x224
    gmacs_deploy: float
    top1: float  # %
    top5: float


def _published_figures() -> Dict[str, PublishedFigures]:
    forms = {(model.arch, model.deploy): model for model in _zoo_models().values()}
    return {
        arch: PublishedFigures(train.epochs, train.params_m, forms[arch, True].params_m,
                               train.gmacs, forms[arch, True].gmacs, train.top1, train.top5)
        for (arch, deploy), train in forms.items() if not deploy
    }


PUBLISHED: Dict[str, PublishedFigures] = _published_figures()

"""The published classifiers' model dict, and building model dicts in a scope."""
import copy

from mmengine.registry import DefaultScope
from torch import nn

from ..registry import MODELS
from .._utils import global_rngs_kept
from .arch import stage_widths


def repvgg_classifier_cfg(arch, deploy: bool = False, num_classes: int = 1000,
                          base_channels: int = 64, **backbone_kwargs) -> dict:
    """The published classifiers' model dict: a RepVGG backbone of ``arch`` (more arguments in
    ``backbone_kwargs``), global average pooling and a ``num_classes`` linear head."""
    stage_4_channels = stage_widths(arch, base_channels)[-1]
    return dict(
        type='ImageClassifier',
        backbone=dict(type='RepVGG', arch=arch, deploy=deploy, base_channels=base_channels,
                      **backbone_kwargs),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=stage_4_channels,
                  loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))


def build_model(model_cfg: dict, scope: str = 'mmrepvgg') -> nn.Module:
    """Build ``model_cfg`` in eval mode in ``scope`` (``'mmseg'``, ``'mmdet'``), drawing the
    initial weights from a fork of torch's global generator, which is left as it was."""
    with DefaultScope.overwrite_default_scope(scope), global_rngs_kept():
        model = MODELS.build(copy.deepcopy(model_cfg))
    return model.eval()

"""The published RepVGG classifier as a config dict, and building model dicts in the
``mmrepvgg`` scope."""
import copy

from mmengine.registry import DefaultScope
from torch import nn

from ..registry import MODELS
from .._utils import global_rngs_kept
from .arch import stage_widths


def repvgg_classifier_cfg(arch, deploy: bool = False, num_classes: int = 1000,
                          base_channels: int = 64, **backbone_kwargs) -> dict:
    """The model dict of the published classifiers: ``ImageClassifier`` with a RepVGG
    backbone, global average pooling and a linear head over the stage-4 channels.

    Args:
        arch (str | dict): variant name or custom arch dict (see :mod:`.arch`).
        deploy: build the backbone in deploy form.
        num_classes: classes of the linear head.
        base_channels: the backbone's ``base_channels``.
        **backbone_kwargs: further backbone arguments (e.g. ``with_cp=True``).
    """
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
    """Build a model dict in the ``mmrepvgg`` scope (``RepVGG`` is this project's, whatever
    the current default scope), as described (train or deploy form), in eval mode.
    ``scope`` names another one for models of other projects (``'mmseg'``, ``'mmdet'``),
    whose configs name the backbone ``'mmrepvgg.RepVGG'``. The initial weights are drawn
    from a fork of torch's global generator, which is left as it was."""
    with DefaultScope.overwrite_default_scope(scope), global_rngs_kept():
        model = MODELS.build(copy.deepcopy(model_cfg))
    return model.eval()

"""The models. Public: the backbone :class:`RepVGG` (``type='mmrepvgg.RepVGG'`` in a
config, mmpretrain's arguments), its blocks :class:`RepVGGBlock` (the official
``get_equivalent_kernel_bias``) and :class:`QARepVGGBlock`, YOLOX-PAI's :class:`MTSPPF`,
:func:`reparameterize_blocks` (fuse any model in place), :func:`reparameterize_model`
(its fused copy), :func:`build_model` (a model dict, built in the ``mmrepvgg`` scope) and
:func:`repvgg_classifier_cfg` (the model dict of a RepVGG classifier), the published
architectures :data:`ARCH_SETTINGS` and :class:`RepVGGArgumentError`. The package's own
helpers live in :mod:`.arch` and :mod:`.repvgg`.
"""
from .arch import ARCH_SETTINGS, RepVGGArgumentError
from .classifier import build_model, repvgg_classifier_cfg
from .repvgg import RepVGG
from .repvgg_block import (QARepVGGBlock, RepVGGBlock, reparameterize_blocks,
                           reparameterize_model)
from .sppf import MTSPPF

__all__ = ['RepVGG', 'RepVGGBlock', 'QARepVGGBlock', 'MTSPPF', 'reparameterize_blocks',
           'reparameterize_model', 'build_model', 'repvgg_classifier_cfg', 'ARCH_SETTINGS',
           'RepVGGArgumentError']

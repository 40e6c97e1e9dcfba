"""The models. Public: the backbone :class:`RepVGG` (``type='mmrepvgg.RepVGG'`` in a
config, mmpretrain's arguments), its blocks :class:`RepVGGBlock` (the official
``get_equivalent_kernel_bias``) and :class:`QARepVGGBlock`, YOLOX-PAI's :class:`MTSPPF`,
:func:`reparameterize_blocks` (fuse any model in place), :func:`reparameterize_model`
(its fused copy), the published architectures
:data:`ARCH_SETTINGS` and :class:`RepVGGArgumentError`. The other names imported here
serve the package.
"""
from .arch import (ARCH_SETTINGS, EXTRA_ARCH_SETTINGS, RepVGGArgumentError,
                   resolve_arch)
from .classifier import build_model, repvgg_classifier_cfg
from .repvgg import BLOCK_TYPES, RepVGG, image_channels
from .repvgg_block import (QARepVGGBlock, RepVGGBlock, reparameterize_blocks,
                           reparameterize_model)
from .sppf import MTSPPF

__all__ = ['RepVGG', 'RepVGGBlock', 'QARepVGGBlock', 'MTSPPF', 'reparameterize_blocks',
           'reparameterize_model',
           'ARCH_SETTINGS', 'RepVGGArgumentError']

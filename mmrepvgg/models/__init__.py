"""The backbone :class:`RepVGG`, its blocks, their fusion and the classifier builder."""
from .arch import ARCH_SETTINGS, RepVGGArgumentError
from .classifier import build_model, repvgg_classifier_cfg
from .repvgg import RepVGG
from .repvgg_block import (QARepVGGBlock, RepVGGBlock, reparameterize_blocks,
                           reparameterize_model)
from .sppf import MTSPPF

__all__ = ['RepVGG', 'RepVGGBlock', 'QARepVGGBlock', 'MTSPPF', 'reparameterize_blocks',
           'reparameterize_model', 'build_model', 'repvgg_classifier_cfg', 'ARCH_SETTINGS',
           'RepVGGArgumentError']

from .arch import (ARCH_SETTINGS, EXTRA_ARCH_SETTINGS, RepVGGArgumentError,
                   resolve_arch)
from .classifier import build_model, repvgg_classifier_cfg
from .repvgg import BLOCK_TYPES, RepVGG, image_channels
from .repvgg_block import QARepVGGBlock, RepVGGBlock, reparameterize_blocks
from .sppf import MTSPPF

__all__ = ['ARCH_SETTINGS', 'EXTRA_ARCH_SETTINGS', 'RepVGGArgumentError', 'resolve_arch',
           'build_model', 'repvgg_classifier_cfg', 'BLOCK_TYPES', 'RepVGG', 'QARepVGGBlock',
           'RepVGGBlock', 'image_channels', 'reparameterize_blocks', 'MTSPPF']

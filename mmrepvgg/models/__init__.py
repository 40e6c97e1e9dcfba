from .arch import ARCH_SETTINGS, resolve_arch
from .classifier import build_model, repvgg_classifier_cfg
from .repvgg import RepVGG
from .repvgg_block import RepVGGBlock, image_channels, reparameterize_blocks

__all__ = ['ARCH_SETTINGS', 'resolve_arch', 'build_model', 'repvgg_classifier_cfg', 'RepVGG',
           'RepVGGBlock', 'image_channels', 'reparameterize_blocks']

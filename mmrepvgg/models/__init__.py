from .arch import ARCH_SETTINGS, resolve_arch
from .repvgg import RepVGG
from .repvgg_block import RepVGGBlock, reparameterize_blocks

__all__ = ['ARCH_SETTINGS', 'resolve_arch', 'RepVGG', 'RepVGGBlock', 'reparameterize_blocks']

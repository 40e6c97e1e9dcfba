"""What a RepVGG state dict says about itself: its architecture, its health."""
import re
from typing import Dict, NamedTuple, Optional, Tuple

import torch

from ..models.arch import ARCH_SETTINGS, resolve_arch, stage_widths, stem_width
from ._layouts import StateDict

_BLOCK_KERNEL = re.compile(
    r'^(?:stem|stage_(?P<stage>\d+)\.(?P<index>\d+))\.(?:branch_3x3\.conv|branch_reparam)'
    r'\.weight$', re.ASCII)


class _ArchShape(NamedTuple):
    """The shape facts that tell RepVGG variants apart."""
    stem_width: int
    depths: Tuple[int, ...]
    widths: Tuple[int, ...]
    groups: Dict[int, int]  # {block index (stem = 0): groups} of the grouped blocks
    has_se: bool


def _arch_shape_of_state(backbone: StateDict) -> _ArchShape:
    """Read :class:`_ArchShape` from the 3x3 kernels ``(C_out, C_in // groups, 3, 3)``."""
    kernels: Dict[Tuple[int, int], torch.Size] = {}
    for key, tensor in backbone.items():
        match = _BLOCK_KERNEL.match(key)
        if match is not None:
            position = (0, 0) if match['stage'] is None else (
                int(match['stage']), int(match['index']))
            kernels[position] = tensor.shape
    stem_width = kernels[(0, 0)][0] if (0, 0) in kernels else 0
    num_stages = max((stage for stage, _ in kernels), default=0)
    depths = tuple(sum(1 for stage, _ in kernels if stage == number)
                   for number in range(1, num_stages + 1))
    widths = tuple(kernels[(number, 0)][0] if (number, 0) in kernels else 0
                   for number in range(1, num_stages + 1))
    groups, in_channels, block_index = {}, stem_width, 1
    for number, depth in enumerate(depths, start=1):
        for index in range(depth):
            shape = kernels.get((number, index))
            if shape is not None and shape[1] and in_channels // shape[1] > 1:
                groups[block_index] = in_channels // shape[1]
            in_channels = widths[number - 1]
            block_index += 1
    has_se = any('.se_layer.' in key for key in backbone)
    return _ArchShape(stem_width, depths, widths, groups, has_se)


def _arch_shape_of_setting(name: str) -> _ArchShape:
    arch = resolve_arch(name)
    groups = {index: count for index, count in (arch['group_layer_map'] or {}).items()
              if count > 1 and index <= sum(arch['num_blocks'])}
    return _ArchShape(stem_width(arch), tuple(arch['num_blocks']), stage_widths(arch), groups,
                      arch['se_cfg'] is not None)


def describe_state_arch(backbone: StateDict) -> str:
    """The published variant a backbone state dict (this project's keys) holds, e.g.
    ``'RepVGG-B1g4'`` (``'QARepVGG-A0'`` for train-form QARepVGG blocks: the deploy forms
    are the same network), or its shape facts when none matches."""
    family = 'QARepVGG' if any('.post_norm.' in key for key in backbone) else 'RepVGG'
    shape = _arch_shape_of_state(backbone)
    names = [name for name in ARCH_SETTINGS if _arch_shape_of_setting(name) == shape]
    if names:
        return ' / '.join(f'{family}-{name}' for name in names)
    groups = f', groups {shape.groups}' if shape.groups else ''
    se = ', with SE' if shape.has_se else ''
    return (f'an unpublished {family} (stem {shape.stem_width}, depths {shape.depths}, '
            f'widths {shape.widths}{groups}{se})')


def first_unusable_tensor(state_dict: StateDict) -> Optional[Tuple[str, str]]:
    """``(key, what is wrong and what to do)`` for the first tensor no model can use
    (meta, sparse or quantized, NaN or infinite, a negative BatchNorm ``running_var``, whose
    fusion would take a square root of it); ``None`` when all are usable."""
    for key, tensor in state_dict.items():
        if tensor.is_meta:
            return key, ('is a meta tensor (a shape without values): it was saved from a '
                         'model that was never materialised; save the real weights')
        if tensor.layout != torch.strided or tensor.is_quantized:
            kind = 'quantized' if tensor.is_quantized else str(tensor.layout)
            return key, (f'is a {kind} tensor; save the dense float model '
                         '(tensor.to_dense() / tensor.dequantize())')
        if (tensor.is_floating_point() or tensor.is_complex()) and \
                not bool(torch.isfinite(tensor).all()):
            return key, ('holds NaN or infinite values; the training diverged, use an '
                         'earlier checkpoint')
        if key.endswith('running_var') and bool((tensor < 0).any()):
            return key, (f'is a BatchNorm running variance with {int((tensor < 0).sum())} '
                         'negative values, which no training produces; the file is '
                         'damaged, use another copy')
    return None

"""The RepVGG architectures as data (Ding et al., 2021, Tables 2-3) in mmpretrain's keys:
``num_blocks`` per stage (stem excluded), ``width_factor`` (of the widths ``64 * 2**i``),
``group_layer_map`` ``{block index (stem = 0): groups}``, ``se_cfg``, ``stem_channels`` (max)."""
from typing import Dict, Tuple, Union

# The paper groups the odd-numbered 3x3 layers of the B models: global blocks 2, 4, ..., 26.
_GROUPED_BLOCKS = range(2, 27, 2)
G2 = {block: 2 for block in _GROUPED_BLOCKS}
G4 = {block: 4 for block in _GROUPED_BLOCKS}

A_DEPTHS = (2, 4, 14, 1)
B_DEPTHS = (4, 6, 16, 1)
D_DEPTHS = (8, 14, 24, 1)
# Internal SE width = channels // 16, as in the official D2se.
SE_1_16 = dict(ratio=16, divisor=1)

ARCH_SETTINGS: Dict[str, dict] = {
    'A0':   dict(num_blocks=A_DEPTHS, width_factor=(0.75, 0.75, 0.75, 2.5)),
    'A1':   dict(num_blocks=A_DEPTHS, width_factor=(1, 1, 1, 2.5)),
    'A2':   dict(num_blocks=A_DEPTHS, width_factor=(1.5, 1.5, 1.5, 2.75)),
    'B0':   dict(num_blocks=B_DEPTHS, width_factor=(1, 1, 1, 2.5)),
    'B1':   dict(num_blocks=B_DEPTHS, width_factor=(2, 2, 2, 4)),
    'B1g2': dict(num_blocks=B_DEPTHS, width_factor=(2, 2, 2, 4), group_layer_map=G2),
    'B1g4': dict(num_blocks=B_DEPTHS, width_factor=(2, 2, 2, 4), group_layer_map=G4),
    'B2':   dict(num_blocks=B_DEPTHS, width_factor=(2.5, 2.5, 2.5, 5)),
    'B2g4': dict(num_blocks=B_DEPTHS, width_factor=(2.5, 2.5, 2.5, 5), group_layer_map=G4),
    'B3':   dict(num_blocks=B_DEPTHS, width_factor=(3, 3, 3, 5)),
    'B3g4': dict(num_blocks=B_DEPTHS, width_factor=(3, 3, 3, 5), group_layer_map=G4),
    'D2se': dict(num_blocks=D_DEPTHS, width_factor=(2.5, 2.5, 2.5, 5), se_cfg=SE_1_16),
}

# Also accepted, as mmpretrain's RepVGG accepts them, though no weights were published:
# the remaining grouped B models and the backbone of YOLOX-PAI (Zou et al., 2022).
EXTRA_ARCH_SETTINGS: Dict[str, dict] = {
    'B2g2': dict(num_blocks=B_DEPTHS, width_factor=(2.5, 2.5, 2.5, 5), group_layer_map=G2),
    'B3g2': dict(num_blocks=B_DEPTHS, width_factor=(3, 3, 3, 5), group_layer_map=G2),
    'yolox-pai-small': dict(num_blocks=(3, 5, 7, 3), width_factor=(1, 1, 1, 1),
                            stem_channels=32),
}


class RepVGGArgumentError(ValueError, AssertionError):
    """An argument that cannot build a RepVGG (an ``AssertionError``, as mmpretrain asserts)."""


_DEFAULTS = dict(group_layer_map=None, se_cfg=None, stem_channels=64)
_REQUIRED = ('num_blocks', 'width_factor')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """The complete architecture dict of a variant name or a custom dict; raises TypeError,
    KeyError (a missing key) or :class:`RepVGGArgumentError` as mmpretrain's RepVGG would."""
    known = {**ARCH_SETTINGS, **EXTRA_ARCH_SETTINGS}
    if isinstance(arch, str):
        if arch not in known:
            raise RepVGGArgumentError(f'unknown RepVGG arch {arch!r}; choose one of '
                                      f'{", ".join(known)} or pass a dict')
        arch = known[arch]
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a variant name or a dict, got {type(arch).__name__}')
    missing = [key for key in _REQUIRED if key not in arch]
    if missing:
        raise KeyError(f'custom RepVGG arch lacks {missing}')
    unknown = set(arch) - set(_REQUIRED) - set(_DEFAULTS)
    if unknown:
        raise RepVGGArgumentError(f'unknown RepVGG arch keys {sorted(unknown)}; allowed: '
                                  f'{", ".join(_REQUIRED + tuple(_DEFAULTS))}')
    resolved = {**_DEFAULTS, **arch}
    if len(resolved['num_blocks']) != len(resolved['width_factor']):
        raise RepVGGArgumentError('arch num_blocks and width_factor must have one entry '
                                  'per stage')
    group_layer_map = resolved['group_layer_map'] or {}
    if group_layer_map and max(group_layer_map) > sum(resolved['num_blocks']):
        raise RepVGGArgumentError(f'arch group_layer_map names block {max(group_layer_map)}'
                                  f' but the arch has {sum(resolved["num_blocks"])} blocks '
                                  'after the stem')
    return resolved


def stem_width(arch: Union[str, dict], base_channels: int = 64) -> int:
    """Stem width: ``min(stem_channels, int(base_channels * width_factor[0]))``."""
    arch = resolve_arch(arch)
    return min(arch['stem_channels'], int(base_channels * arch['width_factor'][0]))


def stage_widths(arch: Union[str, dict], base_channels: int = 64) -> Tuple[int, ...]:
    """Stage widths: ``int(base_channels * 2**i * width_factor[i])``."""
    return tuple(int(base_channels * 2**stage * factor)
                 for stage, factor in enumerate(resolve_arch(arch)['width_factor']))

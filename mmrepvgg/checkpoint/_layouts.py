"""Key layouts of RepVGG checkpoints and their mapping onto this project's keys.

Three layouts name the same tensors differently:

=============  ===========================  ===============================  ===============
layout         stem / block of stage ``s``  branches of a block              classifier
=============  ===========================  ===============================  ===============
``mmrepvgg``   ``stem`` / ``stage_s.i``     ``branch_3x3.{conv,norm}``,      ``head.fc``
(mmpretrain,                                ``branch_1x1.{conv,norm}``,
mmcls)                                      ``branch_norm``, ``branch_reparam``,
                                            ``se_layer.conv{1,2}.conv``
``official``   ``stage0`` / ``stages.i``    ``rbr_dense.{conv,bn}``,         ``linear``
                                            ``rbr_1x1.{conv,bn}``, ``rbr_identity``,
                                            ``rbr_reparam``, ``se.{down,up}``
``timm``       ``stem`` / ``stages.s-1.i``  ``conv_kxk.{conv,bn}``,          ``head.fc``
                                            ``conv_1x1.{conv,bn}``, ``identity``,
                                            ``reparam_conv``, ``attn.fc{1,2}``
=============  ===========================  ===============================  ===============

Stages count from 1 in this project's and the official layout (the official ``stage0`` is
the stem) and from 0 in timm's. A layout is pure data (:class:`KeyLayout`); the functions
here only rename keys, they never change a tensor.
"""
import re
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, NamedTuple, Optional, Tuple

from torch import Tensor

StateDict = Dict[str, Tensor]
_NUMBER = '(?:0|[1-9][0-9]*)'


@dataclass(frozen=True)
class KeyLayout:
    """How one source names the modules of a RepVGG.

    Attributes:
        name: what ``--src-format`` calls it.
        stem: module name of the stem block.
        stage_block: block ``index`` of stage ``stage``, formatted with ``stage`` counted
            from ``first_stage``.
        first_stage: number of stage 1 in ``stage_block``.
        block_parts: ``(name in this layout, name in this project)`` of every module
            inside a block.
        head_parts: the same for the classifier, relative to the model root.
    """
    name: str
    stem: str
    stage_block: str
    first_stage: int
    block_parts: Tuple[Tuple[str, str], ...]
    head_parts: Tuple[Tuple[str, str], ...]

    def block_pattern(self) -> 're.Pattern':
        """Matches ``<prefix><stem or stage block>.<part>.<tensor name>``."""
        # Canonical ASCII numbers only: a regex \d and int() also take Unicode digits and
        # leading zeros, which would fold 'stage_04' (or an Arabic-Indic 4) onto 'stage_4'.
        stage_block = re.escape(self.stage_block).replace(
            r'\{stage\}', rf'(?P<stage>{_NUMBER})').replace(
            r'\{index\}', rf'(?P<index>{_NUMBER})')
        parts = '|'.join(re.escape(part) for part, _ in self.block_parts)
        return re.compile(rf'^(?P<prefix>(?:.+\.)?)(?:(?P<stem>{re.escape(self.stem)})|'
                          rf'{stage_block})\.(?P<part>{parts})\.(?P<tensor>[^.]+)$', re.ASCII)


# 'post_norm' (last: the external layouts, zipped with these, have no QARepVGG name) is
# the QARepVGG block's BN after the branch sum.
_PROJECT_BLOCK_PARTS = ('branch_3x3.conv', 'branch_3x3.norm', 'branch_1x1.conv',
                        'branch_1x1.norm', 'branch_norm', 'branch_reparam',
                        'se_layer.conv1.conv', 'se_layer.conv2.conv', 'post_norm')

PROJECT_LAYOUT = KeyLayout(
    name='mmrepvgg', stem='stem', stage_block='stage_{stage}.{index}', first_stage=1,
    block_parts=tuple((part, part) for part in _PROJECT_BLOCK_PARTS),
    head_parts=(('head.fc', 'head.fc'), ))

OFFICIAL_LAYOUT = KeyLayout(
    name='official', stem='stage0', stage_block='stage{stage}.{index}', first_stage=1,
    block_parts=tuple(zip(('rbr_dense.conv', 'rbr_dense.bn', 'rbr_1x1.conv', 'rbr_1x1.bn',
                           'rbr_identity', 'rbr_reparam', 'se.down', 'se.up'),
                          _PROJECT_BLOCK_PARTS)),
    head_parts=(('linear', 'head.fc'), ))

TIMM_LAYOUT = KeyLayout(
    name='timm', stem='stem', stage_block='stages.{stage}.{index}', first_stage=0,
    block_parts=tuple(zip(('conv_kxk.conv', 'conv_kxk.bn', 'conv_1x1.conv', 'conv_1x1.bn',
                           'identity', 'reparam_conv', 'attn.fc1', 'attn.fc2'),
                          _PROJECT_BLOCK_PARTS)),
    head_parts=(('head.fc', 'head.fc'), ))

LAYOUTS: Dict[str, KeyLayout] = {
    layout.name: layout for layout in (PROJECT_LAYOUT, OFFICIAL_LAYOUT, TIMM_LAYOUT)}

# Module parts that exist only in one form of a block.
TRAIN_ONLY_PARTS = frozenset({'branch_3x3.conv', 'branch_3x3.norm', 'branch_1x1.conv',
                              'branch_1x1.norm', 'branch_norm', 'post_norm'})
DEPLOY_ONLY_PARTS = frozenset({'branch_reparam'})

# Wrappers of the state dict: mmengine/mmpretrain ('state_dict'), official script ('model').
STATE_DICT_WRAPPERS = ('state_dict', 'model')
DATA_PARALLEL_PREFIX = 'module.'


class LayoutError(ValueError):
    """The keys match no known RepVGG layout, or more than one RepVGG."""


class ProjectState(NamedTuple):
    """A checkpoint renamed to this project's layout.

    Attributes:
        layout: the source layout's name.
        form: ``'train'`` or ``'deploy'``.
        source_prefix: where the RepVGG sat in the source model, e.g. ``'backbone.'``.
        backbone: RepVGG tensors keyed relative to the backbone (``stem.branch_3x3...``).
        rest: the other tensors keyed relative to the model root (``head.fc.weight``);
            for an external layout only its classifier.
    """
    layout: str
    form: str
    source_prefix: str
    backbone: StateDict
    rest: StateDict


def unwrap_state_dict(checkpoint: object) -> StateDict:
    """The tensors of a checkpoint: bare, or under ``'state_dict'`` / ``'model'``, with
    DistributedDataParallel's ``module.`` prefix removed.

    Raises:
        LayoutError: ``checkpoint`` holds no dict of tensors.
    """
    state_dict = checkpoint
    for wrapper in STATE_DICT_WRAPPERS:
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    if not isinstance(state_dict, Mapping):
        raise LayoutError(f'holds a {type(checkpoint).__name__}, not a state dict; pass a '
                          'checkpoint saved from a model state_dict()')
    tensors = {key: value for key, value in state_dict.items()
               if isinstance(key, str) and isinstance(value, Tensor)}
    if not tensors:
        raise LayoutError('holds no tensors (keys: '
                          f'{", ".join(map(str, list(state_dict)[:5])) or "none"})')
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in tensors):
        tensors = {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in tensors.items()}
    return tensors


def _count_block_keys(state_dict: Iterable[str], layout: KeyLayout) -> int:
    """How many keys name a RepVGG block tensor in ``layout``."""
    pattern = layout.block_pattern()
    return sum(1 for key in state_dict if pattern.match(key))


def detect_layout(state_dict: Iterable[str]) -> KeyLayout:
    """The layout naming the most block tensors of ``state_dict``'s keys.

    Raises:
        LayoutError: no key names a RepVGG block tensor in any layout.
    """
    keys = list(state_dict)
    counts = {name: _count_block_keys(keys, layout) for name, layout in LAYOUTS.items()}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise LayoutError('holds no RepVGG block weights in the mmrepvgg/mmpretrain, '
                          f'official or timm layout (first keys: {", ".join(keys[:3])})')
    return LAYOUTS[best]


def _project_block_name(match: 're.Match', layout: KeyLayout) -> str:
    if match['stem'] is not None:
        return 'stem'
    return f'stage_{int(match["stage"]) - layout.first_stage + 1}.{match["index"]}'


def to_project_layout(state_dict: StateDict, layout: Optional[KeyLayout] = None) -> ProjectState:
    """Rename ``state_dict`` (already unwrapped) from ``layout`` to this project's.

    Args:
        state_dict: tensors keyed in ``layout``.
        layout: the source layout; detected with :func:`detect_layout` when ``None``.

    Raises:
        LayoutError: no or several RepVGG backbones, both train and deploy blocks, or
            (external layouts) keys that belong to neither the backbone nor the head.
    """
    layout = layout or detect_layout(state_dict)
    pattern = layout.block_pattern()
    block_parts = dict(layout.block_parts)
    backbone, rest, prefixes = {}, {}, set()
    for key, tensor in state_dict.items():
        match = pattern.match(key)
        if match is None:
            rest[key] = tensor
            continue
        prefixes.add(match['prefix'])
        project_key = (f'{_project_block_name(match, layout)}.{block_parts[match["part"]]}.'
                       f'{match["tensor"]}')
        if project_key in backbone:
            raise LayoutError(f'two keys name the tensor {project_key!r} (the second is '
                              f'{key!r}); the file was edited, use the original')
        backbone[project_key] = tensor
    if not backbone:
        raise LayoutError(f'holds no RepVGG block weights in the {layout.name} layout'
                          f'{_detected_hint(state_dict)}')
    if len(prefixes) > 1:
        raise LayoutError(f'holds several RepVGG backbones (under {sorted(prefixes)}); '
                          'extract one state dict first')
    source_prefix = prefixes.pop()
    if layout is not PROJECT_LAYOUT:
        rest = _rename_head(rest, layout)
    used_parts = {_part_of(key) for key in backbone}
    if used_parts & TRAIN_ONLY_PARTS and used_parts & DEPLOY_ONLY_PARTS:
        raise LayoutError('mixes train-form (branch_3x3) and deploy-form (branch_reparam) '
                          'blocks; it is a partly converted model')
    form = 'deploy' if used_parts & DEPLOY_ONLY_PARTS else 'train'
    return ProjectState(layout.name, form, source_prefix, backbone, rest)


def _detected_hint(state_dict: StateDict) -> str:
    try:
        return (f' (its keys are in the {detect_layout(state_dict).name} layout); drop '
                '--src-format or pass that one')
    except LayoutError:
        return ''


def _part_of(backbone_key: str) -> str:
    """``'stage_1.0.branch_3x3.norm.weight'`` -> ``'branch_3x3.norm'``."""
    block_depth = 1 if backbone_key.startswith('stem.') else 2
    return '.'.join(backbone_key.split('.')[block_depth:-1])


def _rename_head(rest: StateDict, layout: KeyLayout) -> StateDict:
    renamed = {}
    for key, tensor in rest.items():
        for source_part, project_part in layout.head_parts:
            if key.startswith(source_part + '.'):
                renamed[project_part + key[len(source_part):]] = tensor
                break
        else:
            raise LayoutError(f'key {key!r} is neither a RepVGG block nor the classifier of '
                              f'the {layout.name} layout')
    return renamed


def from_project_layout(backbone: StateDict, head: StateDict, layout: KeyLayout) -> StateDict:
    """Rename this project's backbone-relative and head keys into ``layout``.

    Args:
        backbone: keys like ``stage_1.0.branch_reparam.weight``.
        head: keys like ``head.fc.weight``; parts ``layout`` has no name for are refused.

    Raises:
        LayoutError: a key ``layout`` cannot name.
    """
    project_parts = {project: source for source, project in layout.block_parts}
    pattern = PROJECT_LAYOUT.block_pattern()
    renamed = {}
    for key, tensor in backbone.items():
        match = pattern.match(key)
        if match is None or match['prefix']:
            raise LayoutError(f'{key!r} is not a backbone-relative RepVGG key')
        if match['stem'] is not None:
            block = layout.stem
        else:
            block = layout.stage_block.format(
                stage=int(match['stage']) - 1 + layout.first_stage, index=match['index'])
        renamed[f'{block}.{project_parts[match["part"]]}.{match["tensor"]}'] = tensor
    head_names = {project: source for source, project in layout.head_parts}
    for key, tensor in head.items():
        module, _, tensor_name = key.rpartition('.')
        if module not in head_names:
            raise LayoutError(f'the {layout.name} layout has no name for {key!r}')
        renamed[f'{head_names[module]}.{tensor_name}'] = tensor
    return renamed

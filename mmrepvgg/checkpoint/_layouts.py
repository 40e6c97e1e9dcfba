"""Key layouts of RepVGG checkpoints (mmrepvgg/mmpretrain, official, timm) as data, and
their renaming to and from this project's keys; tensors are never changed."""
import re
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, NamedTuple, Optional, Tuple

from torch import Tensor

StateDict = Dict[str, Tensor]
_NUMBER = '(?:0|[1-9][0-9]*)'


@dataclass(frozen=True)
class _KeyLayout:
    """How one source (``--src-format name``) names the modules of a RepVGG."""
    name: str
    stem: str
    stage_block: str  # formatted with stage and index
    first_stage: int  # stage 1's number (the official stage0 is the stem)
    block_parts: Tuple[Tuple[str, str], ...]  # (name in this layout, name in this project)
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

PROJECT_LAYOUT = _KeyLayout(
    name='mmrepvgg', stem='stem', stage_block='stage_{stage}.{index}', first_stage=1,
    block_parts=tuple((part, part) for part in _PROJECT_BLOCK_PARTS),
    head_parts=(('head.fc', 'head.fc'), ))
OFFICIAL_LAYOUT = _KeyLayout(
    name='official', stem='stage0', stage_block='stage{stage}.{index}', first_stage=1,
    block_parts=tuple(zip(('rbr_dense.conv', 'rbr_dense.bn', 'rbr_1x1.conv', 'rbr_1x1.bn',
                           'rbr_identity', 'rbr_reparam', 'se.down', 'se.up'),
                          _PROJECT_BLOCK_PARTS)),
    head_parts=(('linear', 'head.fc'), ))
TIMM_LAYOUT = _KeyLayout(
    name='timm', stem='stem', stage_block='stages.{stage}.{index}', first_stage=0,
    block_parts=tuple(zip(('conv_kxk.conv', 'conv_kxk.bn', 'conv_1x1.conv', 'conv_1x1.bn',
                           'identity', 'reparam_conv', 'attn.fc1', 'attn.fc2'),
                          _PROJECT_BLOCK_PARTS)),
    head_parts=(('head.fc', 'head.fc'), ))
LAYOUTS: Dict[str, _KeyLayout] = {
    layout.name: layout for layout in (PROJECT_LAYOUT, OFFICIAL_LAYOUT, TIMM_LAYOUT)}

# The parts of a block in both forms; of the others, branch_reparam is the deploy form's.
_BOTH_FORMS_PARTS = frozenset({'se_layer.conv1.conv', 'se_layer.conv2.conv'})
# Wrappers of the state dict: mmengine/mmpretrain ('state_dict'), official script ('model').
STATE_DICT_WRAPPERS = ('state_dict', 'model')
DATA_PARALLEL_PREFIX = 'module.'


class LayoutError(ValueError):
    """The keys match no known RepVGG layout, or more than one RepVGG."""


class ProjectState(NamedTuple):
    """A checkpoint renamed to this project's layout."""
    layout: str
    form: str  # 'train' or 'deploy'
    source_prefix: str  # where the RepVGG sat, e.g. 'backbone.'
    backbone: StateDict  # keyed from the backbone
    rest: StateDict  # keyed from the model root


def _unwrap_state_dict(checkpoint: object) -> StateDict:
    """The tensors of a checkpoint, bare or wrapped, without DistributedDataParallel's
    ``module.`` prefix."""
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


def detect_layout(state_dict: Iterable[str]) -> _KeyLayout:
    """The layout naming the most block tensors of ``state_dict``'s keys."""
    keys = list(state_dict)
    counts = {name: len(list(filter(layout.block_pattern().match, keys)))
              for name, layout in LAYOUTS.items()}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise LayoutError('holds no RepVGG block weights in the mmrepvgg/mmpretrain, '
                          f'official or timm layout (first keys: {", ".join(keys[:3])})')
    return LAYOUTS[best]


def to_project_layout(state_dict: StateDict, layout: Optional[_KeyLayout] = None) -> ProjectState:
    """Rename ``state_dict`` (unwrapped) from ``layout`` (detected when ``None``) to this
    project's; raises :class:`LayoutError` for no or several RepVGG backbones, mixed forms,
    or (external layouts) keys of neither the backbone nor the head."""
    layout = layout or detect_layout(state_dict)
    pattern = layout.block_pattern()
    block_parts = dict(layout.block_parts)
    backbone, rest, prefixes, used_parts = {}, {}, set(), set()
    for key, tensor in state_dict.items():
        match = pattern.match(key)
        if match is None:
            rest[key] = tensor
            continue
        prefixes.add(match['prefix'])
        used_parts.add(block_parts[match['part']])
        block = 'stem' if match['stem'] is not None else \
            f'stage_{int(match["stage"]) - layout.first_stage + 1}.{match["index"]}'
        project_key = f'{block}.{block_parts[match["part"]]}.{match["tensor"]}'
        if project_key in backbone:
            raise LayoutError(f'two keys name the tensor {project_key!r} (the second is '
                              f'{key!r}); the file was edited, use the original')
        backbone[project_key] = tensor
    if not backbone:
        try:
            hint = (f' (its keys are in the {detect_layout(state_dict).name} layout); drop '
                    '--src-format or pass that one')
        except LayoutError:
            hint = ''
        raise LayoutError(f'holds no RepVGG block weights in the {layout.name} layout{hint}')
    if len(prefixes) > 1:
        raise LayoutError(f'holds several RepVGG backbones (under {sorted(prefixes)}); '
                          'extract one state dict first')
    head = rest
    if layout is not PROJECT_LAYOUT:
        head = {}
        for key, tensor in rest.items():
            for source_part, project_part in layout.head_parts:
                if key.startswith(source_part + '.'):
                    head[project_part + key[len(source_part):]] = tensor
                    break
            else:
                raise LayoutError(f'key {key!r} is neither a RepVGG block nor the classifier '
                                  f'of the {layout.name} layout')
    form = 'deploy' if 'branch_reparam' in used_parts else 'train'
    if form == 'deploy' and used_parts - _BOTH_FORMS_PARTS - {'branch_reparam'}:
        raise LayoutError('mixes train-form (branch_3x3) and deploy-form (branch_reparam) '
                          'blocks; it is a partly converted model')
    return ProjectState(layout.name, form, prefixes.pop(), backbone, head)


def from_project_layout(backbone: StateDict, head: StateDict, layout: _KeyLayout) -> StateDict:
    """Rename this project's backbone-relative keys (``stage_1.0.branch_reparam.weight``)
    and head keys (``head.fc.weight``) into ``layout``; raises :class:`LayoutError` for a
    key ``layout`` cannot name."""
    project_parts = {project: source for source, project in layout.block_parts}
    pattern = PROJECT_LAYOUT.block_pattern()
    renamed = {}
    for key, tensor in backbone.items():
        match = pattern.match(key)
        if match is None or match['prefix']:
            raise LayoutError(f'{key!r} is not a backbone-relative RepVGG key')
        block = layout.stem if match['stem'] is not None else layout.stage_block.format(
            stage=int(match['stage']) - 1 + layout.first_stage, index=match['index'])
        renamed[f'{block}.{project_parts[match["part"]]}.{match["tensor"]}'] = tensor
    head_names = {project: source for source, project in layout.head_parts}
    for key, tensor in head.items():
        module, _, tensor_name = key.rpartition('.')
        if module not in head_names:
            raise LayoutError(f'the {layout.name} layout has no name for {key!r}')
        renamed[f'{head_names[module]}.{tensor_name}'] = tensor
    return renamed

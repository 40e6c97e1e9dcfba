""":func:`load_checkpoint`: the one way weights get into a model, refusing (with one line
naming the fix) what mmengine's non-strict load would skip (docs/checkpoints.md)."""
from typing import Any, Dict, List, NamedTuple, Optional, Union

from torch import Tensor, nn

from ..model_zoo import checkpoint_source
from ..models import RepVGG, reparameterize_blocks
from .errors import CheckpointError
from ._inspection import describe_state_arch, first_unusable_tensor
from ._layouts import (LAYOUTS, LayoutError, ProjectState, StateDict, _unwrap_state_dict,
                       to_project_layout)
from ._reader import _read_checkpoint, load_checkpoint_file
from ._remote import _checkpoint_local_path

FIT_MODES = ('exact', 'convert', 'finetune')
_BATCH_COUNTER = 'num_batches_tracked'
_DEPLOY_PART = '.branch_reparam.'


class FittedState(NamedTuple):
    """A checkpoint fitted to a model."""
    source: ProjectState  # in this project's layout
    state_dict: StateDict  # what was loaded, keyed as in the model
    skipped: List[str]  # 'head.fc.bias ((1000,) in the checkpoint, (10,) in the model)'
    filled: List[str]  # num_batches_tracked keys taken from the model itself


def repvgg_prefix(model: nn.Module) -> Optional[str]:
    """Where ``model`` keeps its RepVGG backbone: ``'backbone.'``, ``''`` for a bare
    backbone, ``None`` when it holds none or several."""
    paths = [path for path, module in model.named_modules() if isinstance(module, RepVGG)]
    if len(paths) != 1:
        return None
    return paths[0] + '.' if paths[0] else ''


def _read_project_state(checkpoint: Any, name: str, layout_name: Optional[str]) -> ProjectState:
    """A read checkpoint in this project's layout, its tensors checked; ``layout_name`` (a
    key of ``LAYOUTS``) is detected when ``None``."""
    if layout_name is not None and layout_name not in LAYOUTS:
        raise CheckpointError(f'unknown source format {layout_name!r}; choose one of '
                              f'{", ".join(LAYOUTS)}')
    try:
        state_dict = _unwrap_state_dict(checkpoint)
        unusable = first_unusable_tensor(state_dict)
        if unusable is not None:
            raise CheckpointError(f'{name}: tensor {unusable[0]!r} {unusable[1]}')
        return to_project_layout(state_dict, LAYOUTS.get(layout_name))
    except LayoutError as error:
        raise CheckpointError(f'{name}: {error}') from error


def _tensors(count: int) -> str:
    return f'{count} tensor{"s" if count != 1 else ""}'


def _check_form(source_form: str, model_state: StateDict, name: str) -> None:
    model_form = 'deploy' if any(_DEPLOY_PART in key for key in model_state) else 'train'
    if source_form == model_form:
        return
    if source_form == 'deploy':
        raise CheckpointError(f'{name} is a deploy (re-parameterized) checkpoint but the '
                              'config builds the train form: test it with a config from '
                              'configs/deploy/')
    raise CheckpointError(f'{name} is a train-form checkpoint but the config builds the '
                          'deploy form: convert it with tools/reparameterize_repvgg.py, or '
                          'test it with the train config')


def _difference(tensor: Tensor, target: Tensor) -> str:
    if tensor.shape != target.shape:
        return f'{tuple(tensor.shape)} in the checkpoint, {tuple(target.shape)} in the model'
    return f'{tensor.dtype} in the checkpoint, {target.dtype} in the model'


def _mismatch(key: str, tensor: Tensor, target: Tensor) -> Optional[str]:
    """Why ``tensor`` (checkpoint) cannot load into ``target`` (model); None if it can."""
    if tensor.shape != target.shape:
        if key.endswith(('fc.weight', 'fc.bias')) and tensor.shape[:1] != target.shape[:1]:
            return (f'its head has {tensor.shape[0]} classes but the config\'s has '
                    f'{target.shape[0]}; set model.head.num_classes={tensor.shape[0]}')
        if key.endswith('fc.weight') and tensor.dim() == 2 and target.dim() == 2:
            return (f'its head takes {tensor.shape[1]} input channels but the config\'s '
                    f'takes {target.shape[1]}; set model.head.in_channels={tensor.shape[1]}')
        return (f'tensor {key!r} has shape {tuple(tensor.shape)}, the model\'s '
                f'{tuple(target.shape)}; use the config the checkpoint was trained with')
    # Floating tensors load into any floating dtype (torch casts, as for fp16 releases);
    # integer counters, complex or bool tensors must match exactly.
    if tensor.dtype != target.dtype and not (tensor.dtype.is_floating_point
                                             and target.dtype.is_floating_point):
        return (f'tensor {key!r} is {tensor.dtype}, the model\'s {target.dtype}; the file '
                'was edited or saved from another model')
    return None


def _check_backbone(model_backbone: StateDict, backbone: StateDict, name: str,
                    prefix: str) -> None:
    """Raise unless ``backbone`` fits ``model_backbone`` (both keyed from the backbone,
    which is under ``prefix`` in the model) exactly."""
    source_arch = describe_state_arch(backbone)
    model_arch = describe_state_arch(model_backbone)
    if source_arch != model_arch:
        fix = ('use a config that builds it' if source_arch.startswith('an unpublished')
               else f'use the {source_arch} config')
        raise CheckpointError(f'{name}: holds {source_arch} weights but the config builds '
                              f'{model_arch}; {fix}')
    missing = sorted(set(model_backbone) - set(backbone))
    if missing:
        raise CheckpointError(f'{name}: lacks {_tensors(len(missing))} of the backbone the '
                              f'model needs, e.g. {prefix + missing[0]!r}; pass a complete '
                              'checkpoint')
    unexpected = sorted(set(backbone) - set(model_backbone))
    if unexpected:
        raise CheckpointError(f'{name}: holds {_tensors(len(unexpected))} of a backbone the '
                              f'model has no place for, e.g. {prefix + unexpected[0]!r}; use '
                              'the config the checkpoint was trained with')
    for key, tensor in backbone.items():
        problem = _mismatch(prefix + key, tensor, model_backbone[key])
        if problem is not None:
            raise CheckpointError(f'{name}: {problem}')


def _fit_project_state(model: nn.Module, source: ProjectState, name: str,
                       mode: str) -> FittedState:
    """What of ``source`` to load into ``model`` in ``mode``; raises
    :class:`CheckpointError` for the first thing that does not fit."""
    model_state = model.state_dict()
    _check_form(source.form, model_state, name)
    prefix = repvgg_prefix(model)
    prefix = source.source_prefix if prefix is None else prefix
    filled = [key for key in model_state
              if key.endswith(_BATCH_COUNTER) and key.startswith(prefix)
              and key[len(prefix):] not in source.backbone]
    backbone = {**{key[len(prefix):]: model_state[key].clone() for key in filled},
                **source.backbone}
    model_backbone = {key[len(prefix):]: tensor for key, tensor in model_state.items()
                      if key.startswith(prefix)}
    _check_backbone(model_backbone, backbone, name, prefix)

    # 'model.' for a backbone saved under 'model.backbone.', loaded into 'backbone.'.
    wrapper = source.source_prefix[:len(source.source_prefix) - len(prefix)] \
        if prefix and source.source_prefix.endswith(prefix) else ''
    rest = {key[len(wrapper):] if wrapper and key.startswith(wrapper) else key: tensor
            for key, tensor in source.rest.items()}
    model_rest = {key: tensor for key, tensor in model_state.items()
                  if not key.startswith(prefix)}
    for key in model_rest:
        if key.endswith(_BATCH_COUNTER) and key not in rest:
            rest[key] = model_rest[key].clone()
            filled.append(key)
    unexpected = sorted(set(rest) - set(model_rest))
    missing = sorted(set(model_rest) - set(rest))
    mismatched = {key: _mismatch(key, rest[key], model_rest[key])
                  for key in sorted(set(rest) & set(model_rest))}
    mismatched = {key: problem for key, problem in mismatched.items() if problem is not None}
    if mode != 'finetune' and missing:
        raise CheckpointError(f'{name}: lacks {_tensors(len(missing))} the model needs, e.g. '
                              f'{missing[0]!r}; pass a checkpoint of the whole model')
    if mode == 'exact' and unexpected:
        raise CheckpointError(
            f'{name}: holds {_tensors(len(unexpected))} the model has no place for, '
            f'e.g. {unexpected[0]!r}; it was edited or saved from another model, '
            'use the config it was trained with')
    if mode != 'finetune' and mismatched:
        raise CheckpointError(f'{name}: {next(iter(mismatched.values()))}')
    problems: Dict[str, str] = {key: 'not in the model' for key in unexpected}
    problems.update({key: 'not in the checkpoint' for key in missing})
    problems.update({key: _difference(rest[key], model_rest[key]) for key in mismatched})
    loadable = {prefix + key: tensor for key, tensor in backbone.items()}
    loadable.update({key: tensor for key, tensor in rest.items() if key not in problems})
    skipped = [f'{key} ({problem})' for key, problem in problems.items()]
    return FittedState(source, loadable, skipped, filled)


def checkpoint_file(source: str) -> str:
    """The local file a tool reads for its checkpoint argument: a path as it is; a zoo name
    or ``http(s)://`` URL downloaded once into the project's cache (errors name the URL)."""
    return _checkpoint_local_path(checkpoint_source(source), _read_checkpoint)


def load_checkpoint(model: nn.Module,
                    source: Union[str, dict],
                    mode: str = 'exact',
                    layout: Optional[str] = None,
                    name: Optional[str] = None) -> FittedState:
    """Load a checkpoint into ``model`` after checking every tensor fits (mmengine's
    ``load_checkpoint``, refusing instead of skipping); missing ``num_batches_tracked``
    counters are filled from the model.

    Args:
        source: a path, ``http(s)://`` URL or model zoo name, or a checkpoint already read
            (a state dict, bare or wrapped).
        mode: ``'exact'`` (testing, resuming): exactly the model's tensors; ``'convert'``:
            tensors the model has no place for are skipped, and a deploy-form checkpoint
            fuses the model's blocks first; ``'finetune'``: the RepVGG backbone must fit
            exactly, whatever else does not is skipped and listed.
        layout: ``'mmrepvgg'``, ``'official'`` or ``'timm'``; detected when ``None``.
        name: what messages call the checkpoint; defaults to the path or URL.

    Raises:
        CheckpointError: the first thing unreadable or that does not fit, with the fix.
        ValueError: an unknown ``mode``.
    """
    if mode not in FIT_MODES:
        raise ValueError(f'mode must be one of {FIT_MODES}, got {mode!r}')
    if isinstance(source, str):
        path_or_url = checkpoint_source(source)
        name = name or path_or_url
        source = load_checkpoint_file(path_or_url)
    name = name or 'the checkpoint'
    state = _read_project_state(source, name, layout)
    if mode == 'convert' and state.form == 'deploy':
        reparameterize_blocks(model)
    fitted = _fit_project_state(model, state, name, mode)
    model.load_state_dict(fitted.state_dict, strict=mode != 'finetune')
    return fitted

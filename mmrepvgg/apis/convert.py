"""One-call conversions of train-form RepVGG models and checkpoints to their deploy form."""
import copy
import inspect
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from ..checkpoint import (LAYOUTS, CheckpointError, LayoutError, ProjectState,
                          arch_shape_of_state, describe_arch, first_non_finite,
                          from_project_layout, load_checkpoint_file, save_checkpoint_atomic,
                          to_project_layout, unwrap_state_dict)
from ..config_file import ConfigError, read_config
from ..models import RepVGG, RepVGGBlock, image_channels, reparameterize_blocks
from ..registry import MODELS
from ..testing import max_relative_error
from ..version import __version__

# A fused model agrees with its train form up to float32 rounding accumulated over ~20
# layers; a relative error above this means the weights or the fusion are wrong.
VERIFY_TOLERANCE = 1e-4
VERIFY_INPUT_SIZE = (2, 64, 64)  # (batch, height, width): small, yet 2x2 after stride 32
DST_FORMATS = ('mmrepvgg', 'official')


class ConversionReport(NamedTuple):
    """What :func:`convert_checkpoint` did.

    Attributes:
        src_layout: detected (or forced) source layout, see ``mmrepvgg.checkpoint.LAYOUTS``.
        src_form: ``'train'`` or ``'deploy'`` (then nothing was fused).
        arch: the variant the weights have, e.g. ``'RepVGG-A0'``.
        num_fused_blocks: RepVGG blocks fused.
        max_relative_error: ``max |train - deploy| / max |train|`` over the outputs for a
            random batch, or ``None`` for a deploy-form source.
        dst: absolute path written.
        notices: things the user should know that did not stop the conversion.
    """
    src_layout: str
    src_form: str
    arch: str
    num_fused_blocks: int
    max_relative_error: Optional[float]
    dst: str
    notices: List[str]


def repvgg_convert(train_model: nn.Module,
                   build_func: Optional[Callable[..., nn.Module]] = None,
                   save_path: Optional[str] = None,
                   inplace: bool = False,
                   overwrite: bool = False) -> nn.Module:
    """Return the deploy form of any model holding RepVGG blocks; optionally save it.

    Args:
        train_model: a train-form backbone, classifier or detector. Its BN running
            statistics define the fused weights (the eval-mode function is preserved).
        build_func: the official repository's form, ``repvgg_convert(train_model,
            create_RepVGG_A0, save_path=...)``: called as ``build_func(deploy=True)``, it
            builds the model that receives the fused weights (strictly) and is returned.
            ``None`` returns the fused model itself.
        save_path: if given, ``{'state_dict': deploy_state_dict}`` is written there
            atomically, as mmengine writes checkpoints.
        inplace: fuse ``train_model`` itself instead of a deep copy.
        overwrite: allow replacing an existing ``save_path``.

    Returns:
        The deploy model, in eval mode.

    Raises:
        ValueError: ``train_model`` holds no train-form RepVGG block, or the model of
            ``build_func`` does not take the fused weights.
    """
    deploy_model = train_model if inplace else copy.deepcopy(train_model)
    if reparameterize_blocks(deploy_model) == 0:
        raise ValueError('the model holds no train-form RepVGG block: it is already '
                         'deployed or is not a RepVGG model; nothing to convert')
    if build_func is not None:
        fused_state_dict = deploy_model.state_dict()
        deploy_model = build_func(deploy=True)
        try:
            deploy_model.load_state_dict(fused_state_dict, strict=True)
        except RuntimeError as error:  # torch lists every missing or misfit key
            first_problem = str(error).splitlines()[1].strip()
            raise ValueError(
                f'{getattr(build_func, "__name__", build_func)}(deploy=True) builds another '
                f'model than the one converted ({first_problem}); pass the builder of the '
                'same variant') from error
    deploy_model.eval()
    if save_path is not None:
        save_checkpoint_atomic({'state_dict': deploy_model.state_dict()}, save_path,
                               overwrite=overwrite)
    return deploy_model


def _force_train_form(node: Any) -> int:
    """Set ``deploy=False`` in every ``type='RepVGG'`` dict of a config; count them."""
    found = 0
    if isinstance(node, dict):
        if node.get('type') in ('RepVGG', RepVGG):
            node['deploy'] = False
            found += 1
        for value in node.values():
            found += _force_train_form(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _force_train_form(value)
    return found


def build_train_model(config: Union[str, Config]) -> nn.Module:
    """Build the train form of the model of a train or deploy config, in eval mode.

    Every ``type='RepVGG'`` dict gets ``deploy=False``; types resolve in the ``mmrepvgg``
    scope whatever the config's ``default_scope``, so ``RepVGG`` is this project's.

    Raises:
        ConfigError: the config cannot be read, has no ``model``, or builds no RepVGG
            block.
    """
    if not isinstance(config, Config):
        config = read_config(config)
    name = config.filename or 'the config'
    model_cfg = copy.deepcopy(config.get('model'))
    if not isinstance(model_cfg, dict):
        raise ConfigError(f'{name}: has no model dict; pass a RepVGG model config')
    if _force_train_form(model_cfg) == 0:
        backbone_type = (model_cfg.get('backbone') or {}).get('type', model_cfg.get('type'))
        raise ConfigError(f'{name}: not a RepVGG config (its model has backbone type '
                          f'{backbone_type!r}, none of type \'RepVGG\'); pass a RepVGG '
                          'config')
    try:
        with DefaultScope.overwrite_default_scope('mmrepvgg'):
            model = MODELS.build(model_cfg)
    except Exception as error:  # whatever the registry or a constructor raises
        raise ConfigError(f'{name}: cannot build its model ({type(error).__name__}: '
                          f'{error}); fix the model settings') from error
    if not any(isinstance(module, RepVGGBlock) for module in model.modules()):
        raise ConfigError(f'{name}: its model holds no mmrepvgg RepVGG block; set '
                          "default_scope='mmrepvgg' and use type='RepVGG'")
    return model.eval()


def _backbone_prefix(model: nn.Module, source_prefix: str) -> str:
    """Where the model keeps its RepVGG: ``'backbone.'``, ``''`` for a bare backbone."""
    paths = [path for path, module in model.named_modules() if isinstance(module, RepVGG)]
    if len(paths) != 1:  # blocks used without the RepVGG backbone: trust the source names
        return source_prefix
    return paths[0] + '.' if paths[0] else ''


def load_repvgg_weights(model: nn.Module,
                        src: str,
                        src_format: Optional[str] = None) -> Tuple[ProjectState, List[str]]:
    """Load a RepVGG checkpoint of any known layout into ``model``, checking it first.

    Args:
        model: a model holding RepVGG blocks, in train form for a train-form checkpoint.
            A deploy-form checkpoint makes ``model`` deploy (fused) before loading.
        src: checkpoint path, read with :func:`load_checkpoint_file`.
        src_format: a key of ``mmrepvgg.checkpoint.LAYOUTS``; detected when ``None``.

    Returns:
        The renamed checkpoint as loaded, and the keys of ``src`` the model has no place
        for (e.g. a classifier given to a bare backbone), which were not loaded.

    Raises:
        CheckpointError: unreadable file, unknown layout, non-finite weights, another
            arch, another head size, or keys missing from the checkpoint.
    """
    if src_format is not None and src_format not in LAYOUTS:
        raise CheckpointError(f'unknown source format {src_format!r}; choose one of '
                              f'{", ".join(LAYOUTS)}')
    try:
        state = to_project_layout(unwrap_state_dict(load_checkpoint_file(src)),
                                  LAYOUTS.get(src_format))
    except LayoutError as error:
        raise CheckpointError(f'{src}: {error}') from error
    bad_key = first_non_finite({**state.backbone, **state.rest})
    if bad_key is not None:
        raise CheckpointError(f'{src}: tensor {bad_key!r} holds NaN or infinite values; the '
                              'training diverged, use an earlier checkpoint')
    if state.form == 'deploy':
        reparameterize_blocks(model)
    prefix = _backbone_prefix(model, state.source_prefix)
    model_state = model.state_dict()
    backbone = {prefix + key: tensor for key, tensor in state.backbone.items()}
    rest = {key: tensor for key, tensor in state.rest.items() if key in model_state}
    _check_shapes(model_state, backbone, rest, state, src, prefix)
    missing = sorted(set(model_state) - set(backbone) - set(rest))
    if missing:
        raise CheckpointError(f'{src}: lacks {len(missing)} tensors the model needs, e.g. '
                              f'{missing[0]!r}; pass a checkpoint of the whole model')
    model.load_state_dict({**backbone, **rest})
    dropped = sorted(set(state.rest) - set(rest))
    return state._replace(rest=rest), dropped


def _check_shapes(model_state: Dict[str, Tensor], backbone: Dict[str, Tensor],
                  rest: Dict[str, Tensor], state: ProjectState, src: str,
                  prefix: str) -> None:
    model_backbone = {key[len(prefix):]: tensor for key, tensor in model_state.items()
                      if key.startswith(prefix)}
    for key, tensor in backbone.items():
        if key not in model_state or model_state[key].shape != tensor.shape:
            source_arch = describe_arch(arch_shape_of_state(state.backbone))
            model_arch = describe_arch(arch_shape_of_state(model_backbone))
            if source_arch != model_arch:
                raise CheckpointError(f'{src}: holds {source_arch} weights but the config '
                                      f'builds {model_arch}; use the {source_arch} config')
            raise CheckpointError(f'{src}: tensor {key!r} does not fit the model '
                                  f'(shape {tuple(tensor.shape)}); check model settings')
    for key, tensor in rest.items():
        if model_state[key].shape == tensor.shape:
            continue
        if key.endswith('fc.weight') or key.endswith('fc.bias'):
            raise CheckpointError(
                f'{src}: its head has {tensor.shape[0]} classes but the config\'s has '
                f'{model_state[key].shape[0]}; set model.head.num_classes={tensor.shape[0]}')
        raise CheckpointError(f'{src}: tensor {key!r} has shape {tuple(tensor.shape)}, the '
                              f'model {tuple(model_state[key].shape)}; check the config')


def _output_tensors(model: nn.Module, inputs: Tensor) -> List[Tensor]:
    """The model's raw outputs (mmengine models in ``mode='tensor'``), flattened."""
    if 'mode' in inspect.signature(model.forward).parameters:
        outputs = model(inputs, mode='tensor')
    else:
        outputs = model(inputs)
    pending, tensors = [outputs], []
    while pending:
        item = pending.pop()
        if isinstance(item, Tensor):
            tensors.append(item)
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return tensors


@torch.no_grad()
def max_relative_output_error(reference: nn.Module, candidate: nn.Module,
                              in_channels: int, seed: int = 0) -> float:
    """``max |reference(x) - candidate(x)| / max |reference(x)|`` for a random batch
    ``x`` of shape ``(2, in_channels, 64, 64)`` (standard normal, fixed ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = VERIFY_INPUT_SIZE
    inputs = torch.randn(batch, in_channels, height, width, generator=generator)
    return max_relative_error(_output_tensors(reference.eval(), inputs),
                              _output_tensors(candidate.eval(), inputs))


def _deploy_checkpoint(model: nn.Module, dst_format: str, meta: dict) -> dict:
    deploy_state_dict = model.state_dict()
    if dst_format == 'mmrepvgg':
        return {'state_dict': deploy_state_dict, 'meta': meta}
    prefix = _backbone_prefix(model, '')
    backbone = {key[len(prefix):]: tensor for key, tensor in deploy_state_dict.items()
                if key.startswith(prefix)}
    rest = {key: tensor for key, tensor in deploy_state_dict.items()
            if not key.startswith(prefix)}
    try:
        # The official repository publishes bare state dicts.
        return from_project_layout(backbone, rest, LAYOUTS[dst_format])
    except LayoutError as error:
        raise CheckpointError(f'cannot export to the {dst_format} layout: {error}') from error


def convert_checkpoint(config: Union[str, Config],
                       src: str,
                       dst: str,
                       src_format: Optional[str] = None,
                       dst_format: str = 'mmrepvgg',
                       overwrite: bool = False,
                       tolerance: float = VERIFY_TOLERANCE) -> ConversionReport:
    """Convert a train checkpoint of any known layout into a verified deploy checkpoint.

    Builds the train form of ``config``'s model, loads ``src`` into it (see
    :func:`load_repvgg_weights`), fuses every RepVGG block, checks on a random batch that
    both forms agree, and writes ``dst`` atomically. ``src`` is only read.

    Args:
        config: a train or deploy config path (or :class:`Config`) of a model holding
            RepVGG blocks.
        src: the checkpoint to convert.
        dst: where to write; for ``dst_format='mmrepvgg'`` it holds
            ``{'state_dict': deploy_state_dict, 'meta': {...}}``, loadable by
            ``tools/test.py DEPLOY_CONFIG DST``; for ``'official'`` a bare state dict in
            the official repository's deploy layout (``stage0.rbr_reparam.weight``).
        src_format: force a source layout (``mmrepvgg``, ``official``, ``timm``).
        dst_format: one of :data:`DST_FORMATS`.
        overwrite: replace an existing ``dst``.
        tolerance: largest accepted relative output error between the two forms.

    Raises:
        ConfigError: for the config; CheckpointError: for ``src``, ``dst`` or a failed
        verification. ``dst`` is untouched in every case.
    """
    if dst_format not in DST_FORMATS:
        raise CheckpointError(f'unknown destination format {dst_format!r}; choose one of '
                              f'{", ".join(DST_FORMATS)}')
    dst = os.path.abspath(dst)
    if os.path.exists(dst) and not overwrite:
        raise CheckpointError(f'{dst} exists; pass --force to replace it')
    if os.path.exists(src) and os.path.exists(dst) and os.path.samefile(src, dst):
        raise CheckpointError(f'{dst} is the source checkpoint; write to another path')
    model = build_train_model(config)
    state, dropped = load_repvgg_weights(model, src, src_format)
    notices = [f'{src}: {len(dropped)} tensors the model has no place for were not used, '
               f'e.g. {dropped[0]!r}'] if dropped else []
    if state.form == 'deploy':
        notices.append(f'{src} is already in deploy form; written unchanged apart from the '
                       'key names')
        deploy_model, num_fused, relative_error = model, 0, None
    else:
        deploy_model = repvgg_convert(model)
        num_fused = sum(1 for module in model.modules() if isinstance(module, RepVGGBlock))
        relative_error = max_relative_output_error(model, deploy_model, image_channels(model))
        if not relative_error <= tolerance:
            raise CheckpointError(f'{src}: train and deploy outputs differ by '
                                  f'{relative_error:.2e} '
                                  f'(relative, tolerance {tolerance:.0e}); nothing written')
    arch = describe_arch(arch_shape_of_state(state.backbone))
    meta = dict(mmrepvgg_version=__version__, converted_from=os.path.basename(src),
                src_layout=state.layout, src_form=state.form, arch=arch,
                max_relative_error=relative_error)
    checkpoint = _deploy_checkpoint(deploy_model, dst_format, meta)
    try:
        save_checkpoint_atomic(checkpoint, dst, overwrite=overwrite)
    except OSError as error:
        raise CheckpointError(f'{dst}: cannot write ({error.strerror or error}); check the '
                              'folder exists and is writable') from error
    return ConversionReport(state.layout, state.form, arch, num_fused, relative_error, dst,
                            notices)

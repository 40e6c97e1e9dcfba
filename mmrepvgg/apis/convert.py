"""One-call conversions of train-form RepVGG models and checkpoints to their deploy form."""
import copy
import os
from typing import Any, Callable, List, NamedTuple, Optional, Tuple, Union

from mmengine.config import Config
from torch import nn

from ..checkpoint import (CheckpointError, check_output, load_checkpoint,
                          load_checkpoint_file, save_checkpoint_atomic)
from ..checkpoint.fitting import repvgg_prefix
from ..checkpoint._inspection import describe_state_arch, first_unusable_tensor
from ..checkpoint._layouts import LAYOUTS, LayoutError, from_project_layout
from .._config_file import PROJECT_SCOPE, ConfigError, names_project_repvgg, read_config
from ..models import RepVGGBlock, build_model, reparameterize_model
from ..models.repvgg import image_channels
from .._numerics import VERIFY_INPUT_SIZE, VERIFY_TOLERANCE, max_relative_output_error
from ..version import __version__

DST_FORMATS = ('mmrepvgg', 'official')
# Config scopes whose models build in the mmrepvgg scope (classifiers; no scope at all).
CLASSIFIER_SCOPES = (None, PROJECT_SCOPE, 'mmpretrain')


class ConversionReport(NamedTuple):
    """What :func:`convert_checkpoint` did; the errors are None for a deploy-form source."""
    src_layout: str
    src_form: str  # 'train' or 'deploy' (then nothing was fused)
    arch: str
    num_fused_blocks: int
    # max |train - deploy| / max |train| over the outputs for a random batch, in float64
    max_relative_error: Optional[float]
    max_relative_error_float32: Optional[float]
    dst: str  # absolute path
    notices: List[str]


def count_train_form_blocks(model: nn.Module) -> int:
    """How many RepVGG blocks of ``model`` are still in train (multi-branch) form."""
    return sum(1 for module in model.modules()
               if isinstance(module, RepVGGBlock) and not module.deploy)


def repvgg_convert(train_model: nn.Module,
                   build_func: Optional[Callable[..., nn.Module]] = None,
                   save_path: Optional[str] = None,
                   inplace: bool = False,
                   overwrite: bool = False) -> nn.Module:
    """Return the deploy form, in eval mode, of any model holding train-form RepVGG blocks
    (fused with their BN running statistics), a deep copy unless ``inplace``.

    ``build_func`` is the official repository's form, ``repvgg_convert(train_model,
    create_RepVGG_A0, save_path=...)``: ``build_func(deploy=True)`` builds the model that
    takes the fused weights (strictly) and is returned. ``save_path`` receives
    ``{'state_dict': deploy_state_dict}`` atomically. A ValueError when ``train_model``
    holds no train-form block or the built model does not take the fused weights.
    """
    if count_train_form_blocks(train_model) == 0:
        raise ValueError('the model holds no train-form RepVGG block: it is already '
                         'deployed or is not a RepVGG model; nothing to convert')
    deploy_model = reparameterize_model(train_model, inplace)
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
    """Set ``deploy=False`` in every RepVGG dict of a model config; count them."""
    if isinstance(node, dict):
        found = int(names_project_repvgg(node.get('type'), PROJECT_SCOPE))
        if found:
            node['deploy'] = False
        return found + sum(_force_train_form(value) for value in node.values())
    if isinstance(node, (list, tuple)):
        return sum(_force_train_form(value) for value in node)
    return 0


def build_train_model(config: Union[str, Config]) -> nn.Module:
    """Build the train form (``deploy=False``) of a config's model, in the ``mmrepvgg``
    scope for a classifier, in the config's own for a segmentor or detector; a ConfigError
    when it cannot be read or builds no RepVGG block."""
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
    scope = config.get('default_scope')
    try:
        model = build_model(model_cfg, PROJECT_SCOPE if scope in CLASSIFIER_SCOPES else scope)
    except Exception as error:  # whatever the registry or a constructor raises
        raise ConfigError(f'{name}: cannot build its model ({type(error).__name__}: '
                          f'{error}); fix the model settings') from error
    if not any(isinstance(module, RepVGGBlock) for module in model.modules()):
        raise ConfigError(f'{name}: its model holds no mmrepvgg RepVGG block; use '
                          f"type='{PROJECT_SCOPE}.RepVGG'")
    return model


def _verify_fusion(train_model: nn.Module, tolerance: float,
                   src: str) -> Tuple[nn.Module, float, float]:
    """Fuse ``train_model`` in float64, then round once to its dtype (the most accurate
    deploy weights it holds); return ``(deploy model, relative error in float64, in dtype)``.
    A CheckpointError naming ``src`` when the float64 forms differ or a fused tensor is not
    finite."""
    dtype = next(train_model.parameters()).dtype
    input_shape = (VERIFY_INPUT_SIZE[0], image_channels(train_model), *VERIFY_INPUT_SIZE[1:])
    train_float64 = copy.deepcopy(train_model).double()
    deploy_model = repvgg_convert(train_float64)
    error_float64 = max_relative_output_error(train_float64, deploy_model, input_shape)
    if not error_float64 <= tolerance:
        raise CheckpointError(f'{src}: train and deploy outputs differ by {error_float64:.2e} in '
                              f'float64 (relative, tolerance {tolerance:.0e}): the fusion '
                              'is wrong; nothing written')
    deploy_model.to(dtype)
    unusable = first_unusable_tensor(deploy_model.state_dict())
    if unusable is not None:
        raise CheckpointError(f'{src}: the fused {unusable[0]} is not finite in {dtype} (BatchNorm '
                              'statistics such as a running_var near 0 with a large weight '
                              'overflow it); the checkpoint is damaged, use another one; '
                              'nothing written')
    return deploy_model, error_float64, max_relative_output_error(train_model, deploy_model,
                                                                  input_shape)


def _deploy_checkpoint(model: nn.Module, dst_format: str, meta: dict) -> dict:
    deploy_state_dict = model.state_dict()
    if dst_format == 'mmrepvgg':
        return {'state_dict': deploy_state_dict, 'meta': meta}
    prefix = repvgg_prefix(model) or ''
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

    ``src`` is loaded into the train form of ``config``'s model (tensors it has no place for
    are left out, with a notice), fused and verified in float64, and ``dst`` written
    atomically: for ``dst_format='mmrepvgg'`` ``{'state_dict', 'meta'}`` (the source's meta,
    the conversion record under ``meta['reparameterized']``); for ``'official'`` a bare
    state dict in the official deploy layout. ``src_format`` forces a source layout
    (``mmrepvgg``, ``official``, ``timm``). A ConfigError (the config) or CheckpointError
    (``src``, ``dst``, the verification) leaves ``dst`` untouched.
    """
    if dst_format not in DST_FORMATS:
        raise CheckpointError(f'unknown destination format {dst_format!r}; choose one of '
                              f'{", ".join(DST_FORMATS)}')
    dst = os.path.abspath(dst)
    sources = {'source checkpoint': src, 'config': config if isinstance(config, str) else ''}
    try:
        check_output(dst, inputs=sources, overwrite=overwrite)
    except FileExistsError as error:
        raise CheckpointError(str(error)) from None
    model = build_train_model(config)
    checkpoint = load_checkpoint_file(src)
    fitted = load_checkpoint(model, checkpoint, 'convert', src_format, name=src)
    state, skipped = fitted.source, fitted.skipped
    notices = [f'{src}: {len(skipped)} tensors the model has no place for were not used, '
               f'e.g. {skipped[0]}'] if skipped else []
    if state.form == 'deploy':
        notices.append(f'{src} is already in deploy form; written unchanged apart from the '
                       'key names')
        deploy_model, num_fused, error_float64, error_float32 = model, 0, None, None
    else:
        deploy_model, error_float64, error_float32 = _verify_fusion(model, tolerance, src)
        num_fused = count_train_form_blocks(model)
    arch = describe_state_arch(state.backbone)
    record = dict(mmrepvgg_version=__version__, converted_from=os.path.basename(src),
                  src_layout=state.layout, src_form=state.form, arch=arch,
                  max_relative_error=error_float64,
                  max_relative_error_float32=error_float32)
    source_meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    meta = {**(source_meta if isinstance(source_meta, dict) else {}), 'reparameterized': record}
    checkpoint = _deploy_checkpoint(deploy_model, dst_format, meta)
    try:
        save_checkpoint_atomic(checkpoint, dst, overwrite=overwrite, inputs=sources)
    except OSError as error:
        raise CheckpointError(f'{dst}: cannot write ({error.strerror or error}); check the '
                              'folder exists and is writable') from error
    return ConversionReport(state.layout, state.form, arch, num_fused, error_float64,
                            error_float32, dst, notices)

"""The official RepVGG repository's Python API (``repvgg.py``) on this project's models, so that
its snippets run as written (docs/get_started.md); a factory's model also loads the official
and timm key layouts, and ``save_path`` receives a bare state dict, written atomically."""
from typing import Callable, Dict, Optional

from torch import nn

from .apis.convert import repvgg_convert as _fuse
from .checkpoint import save_checkpoint_atomic
from .checkpoint._layouts import PROJECT_LAYOUT, LayoutError, detect_layout, to_project_layout
from .models import build_model, repvgg_classifier_cfg


def _rename_external_layouts(module: nn.Module, state_dict: dict, prefix: str,
                             *unused_args) -> None:
    """The root's ``load_state_dict`` pre-hook: official or timm keys -> ours, in place."""
    if prefix:
        return
    try:
        layout = detect_layout(state_dict)
    except LayoutError:
        return  # no RepVGG keys at all: torch's own strict check says what is missing
    if layout is PROJECT_LAYOUT:
        return
    renamed = to_project_layout(dict(state_dict), layout)
    state_dict.clear()
    state_dict.update({f'backbone.{key}': tensor for key, tensor in renamed.backbone.items()})
    state_dict.update(renamed.rest)


def _factory(arch: str) -> Callable[..., nn.Module]:
    def create(deploy: bool = False, use_checkpoint: bool = False) -> nn.Module:
        model = build_model(repvgg_classifier_cfg(arch, deploy=deploy,
                                                  with_cp=use_checkpoint))
        if hasattr(model, 'register_load_state_dict_pre_hook'):
            model.register_load_state_dict_pre_hook(_rename_external_layouts)
        else:  # torch 2.1 has only the private spelling (same hook arguments)
            model._register_load_state_dict_pre_hook(_rename_external_layouts,
                                                     with_module=True)
        return model.train(not deploy)  # as a new nn.Module, unless it only infers

    create.__name__ = create.__qualname__ = f'create_RepVGG_{arch}'
    create.__doc__ = (f'RepVGG-{arch}, 1000 ImageNet classes, as the official '
                      f'``create_RepVGG_{arch}``: ``deploy`` builds the fused form, '
                      '``use_checkpoint`` turns on activation checkpointing.')
    return create


# The variants of the official func_dict, in its order.
OFFICIAL_VARIANTS = ('A0', 'A1', 'A2', 'B0', 'B1', 'B1g2', 'B1g4', 'B2', 'B2g2', 'B2g4', 'B3',
                     'B3g2', 'B3g4', 'D2se')

func_dict: Dict[str, Callable[..., nn.Module]] = {
    f'RepVGG-{arch}': _factory(arch) for arch in OFFICIAL_VARIANTS}
globals().update({factory.__name__: factory for factory in func_dict.values()})


def get_RepVGG_func_by_name(name: str) -> Callable[..., nn.Module]:
    if name not in func_dict:
        raise KeyError(f'unknown RepVGG name {name!r}; choose one of {", ".join(func_dict)}')
    return func_dict[name]


def _save_bare(model: nn.Module, save_path: Optional[str]) -> nn.Module:
    if save_path is not None:
        save_checkpoint_atomic(model.state_dict(), save_path, overwrite=True)
    return model


def repvgg_model_convert(model: nn.Module, save_path: Optional[str] = None,
                         do_copy: bool = True) -> nn.Module:
    """Fuse every RepVGG block of ``model`` (a copy unless ``do_copy=False``); save the
    bare deploy state dict to ``save_path`` if given. Returns the deploy model."""
    return _save_bare(_fuse(model, inplace=not do_copy), save_path)


def repvgg_convert(model: nn.Module, build_func: Callable[..., nn.Module],
                   save_path: Optional[str] = None) -> nn.Module:
    """The official first API: the fused weights of ``model`` in ``build_func(deploy=True)``
    (e.g. ``create_RepVGG_A0``); save its bare state dict to ``save_path`` if given."""
    return _save_bare(_fuse(model, build_func), save_path)


__all__ = ['func_dict', 'get_RepVGG_func_by_name', 'repvgg_model_convert',
           'repvgg_convert', *(factory.__name__ for factory in func_dict.values())]

"""Loading a RepVGG config for the tools, with errors a user can act on."""
import difflib
from typing import Any, Dict, Optional

from mmengine.config import Config

from ..config_file import ConfigError, read_config


def _backbone_type(cfg: Config) -> Optional[str]:
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    return backbone.get('type') if isinstance(backbone, dict) else None


def check_cfg_options(cfg: Config, cfg_options: Dict[str, Any], config_path: str) -> None:
    """Reject ``--cfg-options`` keys that are typos of existing ones.

    Every dotted key must follow existing dicts down to its last part. The last part may
    be new (``train_dataloader.dataset.indices=64`` adds an option) unless it is a near
    miss of a key already there (``model.backbone.archh``), which is almost always a typo
    that would otherwise surface as an obscure build error or be silently ignored.

    Raises:
        ConfigError: naming the key, the config and the closest existing key.
    """
    for dotted_key in cfg_options:
        node: Any = cfg.to_dict()
        parts = dotted_key.split('.')
        for depth, part in enumerate(parts):
            is_last = depth == len(parts) - 1
            if isinstance(node, (list, tuple)) and part.isdigit():
                if int(part) >= len(node):
                    raise ConfigError(
                        f'--cfg-options {dotted_key}: {".".join(parts[:depth]) or "config"} '
                        f'has {len(node)} entries, index {part} does not exist')
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(
                    f'--cfg-options {dotted_key}: {".".join(parts[:depth])} in {config_path} '
                    f'is not a dict, so it has no key {part!r}')
            if part not in node:
                close = difflib.get_close_matches(part, [str(key) for key in node], n=1,
                                                  cutoff=0.8)
                if close or not is_last or depth == 0:
                    hint = f'; did you mean {".".join(parts[:depth] + close[:1])!r}?' \
                        if close else f'; existing keys: {", ".join(map(str, node))}'
                    raise ConfigError(
                        f'--cfg-options {dotted_key}: {".".join(parts[:depth + 1])} is not '
                        f'in {config_path}{hint}')
                break
            node = node[part]


def load_repvgg_config(config_path: str,
                       cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read an mmengine config that builds this project's RepVGG, apply overrides.

    Args:
        config_path: a ``.py`` config, e.g. ``configs/repvgg-A0_4xb64-coslr-120e_in1k.py``.
        cfg_options: ``--cfg-options`` pairs, dotted keys to values.

    Raises:
        ConfigError: the file is missing or unreadable, its model has no ``RepVGG``
            backbone, it resolves types outside the ``mmrepvgg`` scope, or an override
            key is a typo (see :func:`check_cfg_options`).
    """
    cfg = read_config(config_path)
    if _backbone_type(cfg) != 'RepVGG':
        raise ConfigError(f'{config_path}: not a RepVGG config (model.backbone.type is '
                          f'{_backbone_type(cfg)!r}, expected \'RepVGG\'); use a config from '
                          'configs/')
    if cfg.get('default_scope') != 'mmrepvgg':
        raise ConfigError(
            f'{config_path}: default_scope is {cfg.get("default_scope")!r}, so RepVGG would '
            "be built from another package; set default_scope = 'mmrepvgg' and "
            "custom_imports = dict(imports=['mmrepvgg'])")
    if cfg_options:
        check_cfg_options(cfg, cfg_options, config_path)
        cfg.merge_from_dict(cfg_options)
    return cfg

"""Loading a RepVGG config for the tools, with errors a user can act on."""
import difflib
import os
from typing import Any, Dict, Iterable, Optional

from mmengine.config import Config

from .._config_file import (PROJECT_SCOPE, REPVGG_TYPE, ConfigError, names_project_repvgg,
                            read_config)

DIGITS_DATA_HINT = ('create it with: python tools/demo.py (or python -c "from '
                    'mmrepvgg.datasets import prepare_digits; prepare_digits()")')


def _backbone_type(cfg: Config) -> Optional[str]:
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    return backbone.get('type') if isinstance(backbone, dict) else None


def _check_cfg_options(cfg: Config, cfg_options: Dict[str, Any], config_path: str) -> None:
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
            key is a typo (see :func:`_check_cfg_options`).
    """
    cfg = read_config(config_path)
    backbone_type = _backbone_type(cfg)
    if not isinstance(backbone_type, str) or \
            backbone_type.rpartition('.')[2] != REPVGG_TYPE:
        raise ConfigError(f'{config_path}: not a RepVGG config (model.backbone.type is '
                          f'{backbone_type!r}, expected \'RepVGG\'); use a config from '
                          'configs/')
    if not names_project_repvgg(backbone_type, cfg.get('default_scope')):
        raise ConfigError(
            f'{config_path}: default_scope is {cfg.get("default_scope")!r}, so '
            f'{backbone_type!r} would be built from another package; set default_scope = '
            f"'{PROJECT_SCOPE}' or type='{PROJECT_SCOPE}.{REPVGG_TYPE}', and custom_imports = "
            "dict(imports=['mmrepvgg'])")
    if cfg_options:
        _check_cfg_options(cfg, cfg_options, config_path)
        cfg.merge_from_dict(cfg_options)
    return cfg


def check_dataloaders(cfg: Config, loader_names: Iterable[str], config_path: str) -> None:
    """Fail before the Runner starts if a dataloader cannot work: a ``batch_size`` that is
    not a positive integer, or a local ``dataset.data_root`` folder that does not exist.

    Args:
        loader_names: the dataloaders the run uses, e.g. ``('train_dataloader',
            'val_dataloader')``; absent ones are skipped.

    Raises:
        ConfigError: naming the key, the value and the fix (for the digits data: the
            command that writes it).
    """
    for loader_name in loader_names:
        loader = cfg.get(loader_name)
        if not isinstance(loader, dict):
            continue
        batch_size = loader.get('batch_size')
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f'{loader_name}.batch_size is {batch_size!r} in {config_path}; '
                              f'set a positive integer, e.g. --cfg-options '
                              f'{loader_name}.batch_size=32')
        dataset = loader.get('dataset')
        data_root = dataset.get('data_root') if isinstance(dataset, dict) else None
        # Remote roots (s3://, http://) are read by mmengine's file backends.
        if isinstance(data_root, str) and data_root and '://' not in data_root \
                and not os.path.isdir(data_root):
            fix = (DIGITS_DATA_HINT if 'digits' in data_root else
                   f'put the data there or pass --cfg-options {loader_name}.dataset.'
                   'data_root=FOLDER')
            where = '' if os.path.isabs(data_root) else f' (relative to {os.getcwd()})'
            raise ConfigError(f'{loader_name}.dataset.data_root {data_root!r} of '
                              f'{config_path} is not a folder{where}; {fix}')

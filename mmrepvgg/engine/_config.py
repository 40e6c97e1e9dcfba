"""Loading a RepVGG config for the tools, with errors a user can act on."""
import difflib
import os
from typing import Any, Dict, Iterable, Optional

from mmengine.config import Config, DictAction

from .._config_file import (PROJECT_SCOPE, REPVGG_TYPE, ConfigError, names_project_repvgg,
                            read_config)

DIGITS_DATA_HINT = ('create it with: python tools/demo.py (or python -c "from '
                    'mmrepvgg.datasets import prepare_digits; prepare_digits()")')


class KeyValueAction(DictAction):
    """mmengine's ``KEY=VALUE`` option parser (``--cfg-options``), where an entry without
    ``=`` is an argparse error line (mmengine's raises a ValueError with a traceback)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for entry in values:
            if '=' not in entry:
                parser.error(f'{option_string} {entry}: write KEY=VALUE')
        super().__call__(parser, namespace, values, option_string)


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
    not a positive integer, a negative ``num_workers``, a ``dataset.data_root`` that is a
    URL or no folder, or a ``dataset.data_prefix`` folder missing from it.

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
        num_workers = loader.get('num_workers', 0)
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or \
                num_workers < 0:
            raise ConfigError(f'{loader_name}.num_workers is {num_workers!r} in {config_path}; '
                              f'set 0 (load in the main process) or more, e.g. --cfg-options '
                              f'{loader_name}.num_workers=2')
        dataset = loader.get('dataset')
        if isinstance(dataset, dict):
            _check_data_folders(dataset, loader_name, config_path)


def _check_data_folders(dataset: dict, loader_name: str, config_path: str) -> None:
    """A dataset's ``data_root`` must be a local folder, and its image folder
    (``data_prefix``) one inside it."""
    data_root = dataset.get('data_root')
    if not isinstance(data_root, str) or not data_root:
        return
    key = f'{loader_name}.dataset.data_root'
    if '://' in data_root:
        raise ConfigError(f'{key} {data_root!r} of {config_path} is a URL; the datasets '
                          f'read local folders: download the data and pass --cfg-options '
                          f'{key}=FOLDER')
    where = '' if os.path.isabs(data_root) else f' (relative to {os.getcwd()})'
    if not os.path.isdir(data_root):
        fix = (DIGITS_DATA_HINT if 'digits' in data_root else
               f'put the data there or pass --cfg-options {key}=FOLDER')
        raise ConfigError(f'{key} {data_root!r} of {config_path} is not a folder{where}; '
                          f'{fix}')
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path')
    if isinstance(prefix, str) and prefix and '://' not in prefix and \
            not os.path.isdir(os.path.join(data_root, prefix)):
        raise ConfigError(f'{data_root!r}{where} has no {prefix!r} folder, which '
                          f'{loader_name}.dataset.data_prefix of {config_path} names; put '
                          f'the images there (one folder per class) or pass --cfg-options '
                          f'{loader_name}.dataset.data_prefix=FOLDER')

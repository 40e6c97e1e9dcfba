"""Loading a RepVGG config for the tools, with errors a user can act on."""
import difflib
from typing import Any, Dict, Optional

from mmengine.config import Config, DictAction

from .._config_file import (PROJECT_SCOPE, REPVGG_TYPE, ConfigError, names_project_repvgg,
                            read_config)


class KeyValueAction(DictAction):
    """mmengine's ``KEY=VALUE`` option parser (``--cfg-options``), where an entry without
    ``=`` is an argparse error line (mmengine's raises a ValueError with a traceback)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for entry in values:
            if '=' not in entry:
                parser.error(f'{option_string} {entry}: write KEY=VALUE')
        super().__call__(parser, namespace, values, option_string)


def _check_cfg_options(cfg: Config, cfg_options: Dict[str, Any], config_path: str) -> None:
    """Reject ``--cfg-options`` typos: a dotted key follows existing dicts down to its last
    part, which may be new unless it is a near miss of a key (``model.backbone.archh``)."""
    for dotted_key in cfg_options:
        node: Any = cfg.to_dict()
        parts = dotted_key.split('.')
        for depth, part in enumerate(parts):
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
                if close or depth == 0 or depth < len(parts) - 1:
                    hint = f'; did you mean {".".join(parts[:depth] + close[:1])!r}?' \
                        if close else f'; existing keys: {", ".join(map(str, node))}'
                    raise ConfigError(
                        f'--cfg-options {dotted_key}: {".".join(parts[:depth + 1])} is not '
                        f'in {config_path}{hint}')
                break
            node = node[part]


def load_repvgg_config(config_path: str,
                       cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """Read an mmengine config that builds this project's RepVGG, apply ``--cfg-options``;
    a ConfigError when unreadable, not a RepVGG of the ``mmrepvgg`` scope, or a key is a typo."""
    cfg = read_config(config_path)
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    backbone_type = backbone.get('type') if isinstance(backbone, dict) else None
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

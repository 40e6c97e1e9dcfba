"""Reading an mmengine config file, with errors a user can act on. Configs are Python run when
read: trusted like code (checkpoints need not be)."""
import os
from typing import Any, Optional

from mmengine.config import Config

from .model_zoo import find_model, resource_root


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the problem and the fix."""


def read_config(name_or_path: str) -> Config:
    """The config of a file, a model zoo name (any case), or a project config's relative path
    (``configs/digits/repvgg-A0_digits.py``) from any working directory; ConfigError (one
    line) for no such file or name, a syntax error, a missing ``_base_`` or a failed import."""
    zoo_model = find_model(name_or_path)
    packaged = os.path.join(resource_root(), name_or_path)
    if os.path.isfile(name_or_path):
        path = name_or_path
    elif zoo_model is not None:
        path = zoo_model.config
    elif os.path.isfile(packaged):  # an absolute path joins as itself, checked above
        path = packaged
    else:
        raise ConfigError(f'{name_or_path}: no such config file or model zoo name; check the path, '
                          "e.g. configs/digits/repvgg-A0_digits.py, or see "
                          "mmpretrain.list_models('repvgg*') for the names")
    try:
        return Config.fromfile(path)
    except Exception as error:  # syntax errors, missing _base_ files, failed imports
        lines = str(error).strip().splitlines()
        raise ConfigError(f'{path}: cannot read the config ({type(error).__name__}: '
                          f'{lines[-1] if lines else ""}); fix the file') from error


PROJECT_SCOPE = 'mmrepvgg'
REPVGG_TYPE = 'RepVGG'


def names_project_repvgg(type_value: Any, default_scope: Optional[str]) -> bool:
    """Whether a config ``type`` is this project's RepVGG: ``'mmrepvgg.RepVGG'``, ``'RepVGG'``
    under ``default_scope='mmrepvgg'``, or the class."""
    if isinstance(type_value, str):
        scope, _, name = type_value.rpartition('.')
        return name == REPVGG_TYPE and (scope or default_scope) == PROJECT_SCOPE
    return getattr(type_value, '__name__', None) == REPVGG_TYPE and \
        getattr(type_value, '__module__', '').startswith(PROJECT_SCOPE + '.')

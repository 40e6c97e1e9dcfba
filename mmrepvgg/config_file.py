"""Reading an mmengine config file, with errors a user can act on."""
import os
from typing import Any, Optional

from mmengine.config import Config


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the problem and the fix."""


def read_config(path: str) -> Config:
    """``Config.fromfile(path)``, turning every failure into one :class:`ConfigError` line.

    Raises:
        ConfigError: the file is missing, or has a syntax error, a missing ``_base_`` file or
            a failing import.
    """
    if not os.path.isfile(path):
        raise ConfigError(f'{path}: no such config file; check the path, e.g. '
                          'configs/digits/repvgg-A0_digits.py')
    try:
        return Config.fromfile(path)
    except Exception as error:  # syntax errors, missing _base_ files, failed imports
        lines = str(error).strip().splitlines()
        raise ConfigError(f'{path}: cannot read the config ({type(error).__name__}: '
                          f'{lines[-1] if lines else ""}); fix the file') from error


PROJECT_SCOPE = 'mmrepvgg'
REPVGG_TYPE = 'RepVGG'


def names_project_repvgg(type_value: Any, default_scope: Optional[str]) -> bool:
    """Whether a config ``type`` builds this project's RepVGG: ``'mmrepvgg.RepVGG'`` under
    any scope, ``'RepVGG'`` under ``default_scope='mmrepvgg'``, or the class itself."""
    if isinstance(type_value, str):
        scope, _, name = type_value.rpartition('.')
        return name == REPVGG_TYPE and (scope or default_scope) == PROJECT_SCOPE
    return getattr(type_value, '__name__', None) == REPVGG_TYPE and \
        getattr(type_value, '__module__', '').startswith(PROJECT_SCOPE + '.')

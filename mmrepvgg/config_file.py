"""Reading an mmengine config file, with errors a user can act on."""
import os

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

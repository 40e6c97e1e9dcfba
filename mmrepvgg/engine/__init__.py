"""The Runner side of tools/train.py and tools/test.py: :func:`run_train`, :func:`run_test`,
:func:`load_repvgg_config`, :class:`RepVGGRunner` and :class:`ConfigError`."""
from ._config import ConfigError, load_repvgg_config
from .runner import run_test, run_train
from .safe_runner import RepVGGRunner

__all__ = ['run_train', 'run_test', 'load_repvgg_config', 'RepVGGRunner', 'ConfigError']

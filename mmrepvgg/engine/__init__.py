"""Runner-side helpers behind tools/train.py and tools/test.py. Public: :func:`run_train`
and :func:`run_test` (what the two tools do, in process; ``run_test`` returns the metrics),
:func:`load_repvgg_config` (a config read and checked for this project),
:class:`RepVGGRunner` and :class:`ConfigError`. The tools' helpers live in
:mod:`.runner`, :mod:`._config` and :mod:`._dist`."""
from ._config import ConfigError, load_repvgg_config
from .runner import run_test, run_train
from .safe_runner import RepVGGRunner

__all__ = ['run_train', 'run_test', 'load_repvgg_config', 'RepVGGRunner', 'ConfigError']

"""Runner-side helpers behind tools/train.py, tools/test.py and tools/demo.py. Public:
:func:`run_train` and :func:`run_test` (what the two tools do, in process; ``run_test``
returns the metrics), :class:`RepVGGRunner` and :class:`ConfigError`."""
from .config import ConfigError, check_cfg_options, check_dataloaders, load_repvgg_config
from .dist import LAUNCHERS, check_launcher_environment, setup_distributed, slurm_process_env
from .runner import (build_runner, format_test_metrics, load_model, parse_test_metrics,
                     prepare_test_config, prepare_train_config, run_test, run_train)
from .safe_runner import RepVGGRunner, check_resumable

__all__ = ['run_train', 'run_test', 'RepVGGRunner', 'ConfigError']

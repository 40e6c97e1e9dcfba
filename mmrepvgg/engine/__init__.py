"""Runner-side helpers behind tools/train.py, tools/test.py and tools/demo.py."""
from .config import ConfigError, check_cfg_options, check_dataloaders, load_repvgg_config
from .dist import LAUNCHERS, check_launcher_environment, setup_distributed, slurm_process_env
from .runner import (build_runner, format_test_metrics, load_model, parse_test_metrics,
                     prepare_test_config, prepare_train_config, run_test, run_train)
from .safe_runner import RepVGGRunner, check_resumable

__all__ = [
    'ConfigError', 'check_cfg_options', 'check_dataloaders', 'load_repvgg_config',
    'LAUNCHERS', 'check_launcher_environment', 'setup_distributed', 'slurm_process_env',
    'build_runner', 'format_test_metrics', 'load_model', 'parse_test_metrics',
    'prepare_test_config', 'prepare_train_config', 'run_test', 'run_train', 'RepVGGRunner',
    'check_resumable'
]

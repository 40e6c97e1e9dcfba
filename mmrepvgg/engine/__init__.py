"""Runner-side helpers behind tools/train.py, tools/test.py and tools/demo.py."""
from .config import ConfigError, check_cfg_options, load_repvgg_config
from .dist import LAUNCHERS, setup_distributed, slurm_process_env
from .runner import (build_runner, check_checkpoint_fits, format_test_metrics, load_model,
                     parse_test_metrics, prepare_test_config, prepare_train_config)

__all__ = [
    'ConfigError', 'check_cfg_options', 'load_repvgg_config', 'LAUNCHERS',
    'setup_distributed', 'slurm_process_env', 'build_runner', 'check_checkpoint_fits',
    'format_test_metrics', 'parse_test_metrics', 'prepare_test_config',
    'prepare_train_config', 'load_model'
]

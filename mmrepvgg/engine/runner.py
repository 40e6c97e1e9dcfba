"""What tools/train.py and tools/test.py do, callable in process."""
import contextlib
import json
import os
import subprocess
from typing import Any, Dict, Iterable, Mapping, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.runner import Runner

from ..checkpoint import atomic_output
from ..checkpoint.fitting import checkpoint_file
from ..registry import RUNNERS
from ._config import ConfigError, load_repvgg_config
from .safe_runner import RepVGGRunner

LAUNCHERS = ('none', 'pytorch', 'slurm')
# What each launcher reads from the environment, and what sets it.
LAUNCHER_VARIABLES = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'start the tool with torchrun or bash tools/dist_train.sh / dist_test.sh'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST'),
              'start the tool with srun or bash tools/slurm_train.sh / slurm_test.sh'),
}


def format_test_metrics(metrics: Dict[str, float]) -> str:
    """The line tools/test.py prints last, e.g. ``test metrics: {"accuracy/top1": 96.1}``
    (numpy scalars, as mmseg's IoUMetric gives, written as numbers to 6 decimals)."""
    return 'test metrics: ' + json.dumps(metrics, default=lambda value: round(float(value), 6))


def _set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    # Priority as in OpenMMLab tools: command line, then the config, then work_dirs/<name>.
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        config_name = os.path.splitext(os.path.basename(config_path))[0]
        cfg.work_dir = os.path.join('work_dirs', config_name)
    if os.path.exists(cfg.work_dir) and not os.path.isdir(cfg.work_dir):
        raise ConfigError(f'--work-dir {cfg.work_dir}: is a file, not a folder; pass a '
                          'folder for the logs and checkpoints')


def _check_dataloaders(cfg: Config, loader_names: Iterable[str], config_path: str) -> None:
    """Fail before the Runner starts on a bad ``batch_size``, ``num_workers`` or data folder."""
    # (key, default, smallest value, what to set, an example)
    integer_keys = (('batch_size', None, 1, 'a positive integer', 32),
                    ('num_workers', 0, 0, '0 (load in the main process) or more', 2))
    for loader_name in loader_names:
        loader = cfg.get(loader_name)
        if not isinstance(loader, dict):
            continue
        for key, default, smallest, wanted, example in integer_keys:
            value = loader.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < smallest:
                raise ConfigError(f'{loader_name}.{key} is {value!r} in {config_path}; set '
                                  f'{wanted}, e.g. --cfg-options {loader_name}.{key}={example}')
        dataset = loader.get('dataset')
        if isinstance(dataset, dict):
            _check_data_folders(dataset, loader_name, config_path)


def _check_data_folders(dataset: dict, loader_name: str, config_path: str) -> None:
    """``data_root`` must be a local folder, and ``data_prefix`` one inside it."""
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
        fix = ('create it with: python tools/demo.py (or python -c "from mmrepvgg.datasets '
               'import prepare_digits; prepare_digits()")' if 'digits' in data_root else
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


def _slurm_process_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The torch ``env://`` variables of one process of a Slurm job step."""
    master_addr = environ.get('MASTER_ADDR')
    if not master_addr:
        master_addr = subprocess.check_output(
            ['scontrol', 'show', 'hostnames', environ['SLURM_NODELIST']],
            text=True).split()[0]
    return dict(RANK=environ['SLURM_PROCID'], WORLD_SIZE=environ['SLURM_NTASKS'],
                LOCAL_RANK=environ['SLURM_LOCALID'], MASTER_ADDR=master_addr,
                MASTER_PORT=environ.get('MASTER_PORT', '29500'))


def _setup_distributed(cfg: Config, launcher: str) -> None:
    """Record ``launcher`` in ``cfg``; without CUDA, also join the gloo group and ask for a
    DDP wrapper without device ids (mmengine's ``torch.cuda.set_device`` and
    ``device_ids=[LOCAL_RANK]`` fail on CPU; the Runner skips its init once the group exists)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    names, fix = LAUNCHER_VARIABLES.get(launcher, ((), ''))
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise ConfigError(f'--launcher {launcher}: {", ".join(missing)} not set in the '
                          f'environment; {fix}, or drop --launcher for one process')
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher == 'slurm':
        os.environ.update(_slurm_process_env(os.environ))
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo', init_method='env://')
    cfg.env_cfg = {**cfg.get('env_cfg', {}), 'dist_cfg': dict(backend='gloo')}
    wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.update(cfg.get('model_wrapper_cfg') or {})
    wrapper_cfg['device_ids'] = None  # DDP on CPU modules takes no device ids
    cfg.model_wrapper_cfg = wrapper_cfg


def prepare_test_config(cfg: Config,
                        config_path: str,
                        checkpoint_path: str,
                        work_dir: Optional[str] = None,
                        out: Optional[str] = None,
                        launcher: str = 'none') -> Config:
    """Apply tools/test.py's options to ``cfg`` (in place) and start distribution;
    ``out`` is a new ``.pkl`` file for every prediction. Raises ConfigError on bad input."""
    if not os.path.isfile(checkpoint_path):
        raise ConfigError(f'{checkpoint_path}: no such checkpoint file; check the path')
    _set_work_dir(cfg, config_path, work_dir)
    cfg.load_from = checkpoint_path
    if out is not None:
        if not out.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--out {out}: predictions are dumped as a pickle; '
                              'name a .pkl file')
        if os.path.exists(out):
            raise ConfigError(f'--out {out}: exists; choose a new file name')
        evaluators = cfg.test_evaluator
        if isinstance(evaluators, dict):
            evaluators = [evaluators]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=out)]
    _check_dataloaders(cfg, ('test_dataloader', ), config_path)
    _setup_distributed(cfg, launcher)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner of ``cfg`` (:class:`RepVGGRunner` or its ``runner_type``); a ConfigError
    when an entry does not build."""
    try:
        if 'runner_type' in cfg:
            return RUNNERS.build(cfg)
        return RepVGGRunner.from_cfg(cfg)
    except (KeyError, TypeError, ValueError) as error:
        message = str(error).strip().strip('"')
        raise ConfigError(f'the config does not build: {message}') from error


def run_train(config_path: str,
              work_dir: Optional[str] = None,
              cfg_options: Optional[Dict[str, Any]] = None,
              resume: Optional[str] = None,
              amp: bool = False,
              auto_scale_lr: bool = False,
              launcher: str = 'none') -> Runner:
    """Train as tools/train.py does; return the Runner (its ``work_dir`` holds the
    checkpoints). ``resume``: ``'auto'`` (the work dir's latest checkpoint) or a path.
    Bad input is a ConfigError or CheckpointError before training starts."""
    cfg = load_repvgg_config(config_path, cfg_options)
    _set_work_dir(cfg, config_path, work_dir)
    if amp:
        if get_device() == 'cpu':
            raise ConfigError('--amp needs a GPU (mmengine\'s AmpOptimWrapper has no CPU '
                              'mode); drop --amp on this machine')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        if not os.path.isfile(resume):
            raise ConfigError(f'--resume {resume}: no such checkpoint file; pass a file from '
                              'the work dir, or --resume alone for its latest checkpoint')
        cfg.resume, cfg.load_from = True, resume
    if auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    _check_dataloaders(cfg, ('train_dataloader', 'val_dataloader'), config_path)
    _setup_distributed(cfg, launcher)
    runner = build_runner(cfg)
    runner.train()
    return runner


def run_test(config_path: str,
             checkpoint_path: str,
             work_dir: Optional[str] = None,
             cfg_options: Optional[Dict[str, Any]] = None,
             out: Optional[str] = None,
             launcher: str = 'none') -> Dict[str, float]:
    """Evaluate a checkpoint (path, URL or zoo name) as tools/test.py does; return the
    metrics of ``Runner.test()``, e.g. ``{'accuracy/top1': 95.0}``. Bad input (a misfit
    checkpoint) is a ConfigError or CheckpointError before any image; a FileExistsError
    when ``out`` appeared while the test ran (it is kept)."""
    cfg = load_repvgg_config(config_path, cfg_options)
    checkpoint = checkpoint_file(checkpoint_path)
    prepare_test_config(cfg, config_path, checkpoint, work_dir, out, launcher)
    with contextlib.ExitStack() as outputs:
        if out:  # the dump lands in a partial file, published when complete
            cfg.test_evaluator[-1]['out_file_path'] = outputs.enter_context(atomic_output(
                out, inputs=(config_path, checkpoint), suffix='.pkl'))
        return build_runner(cfg).test()

"""Distributed set-up that also works without GPUs (gloo on CPU).

mmengine 0.10.7 initialises every launcher through ``torch.cuda.set_device`` and wraps the
model with ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine ("Found no NVIDIA
driver"). :func:`setup_distributed` initialises a gloo process group itself in that case,
before the Runner is built (the Runner then skips its own initialisation), and asks for a
DDP wrapper without device ids, which is how DDP runs on CPU.
"""
import os
import subprocess
from typing import Dict, Mapping

import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from .._config_file import ConfigError

LAUNCHERS = ('none', 'pytorch', 'slurm')
DEFAULT_MASTER_PORT = '29500'
# What each launcher reads from the environment, and who sets it.
LAUNCHER_VARIABLES = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'start the tool with torchrun or bash tools/dist_train.sh / dist_test.sh'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST'),
              'start the tool with srun or bash tools/slurm_train.sh / slurm_test.sh'),
}


def _check_launcher_environment(launcher: str, environ: Mapping[str, str]) -> None:
    """Fail with one line when ``launcher``'s environment variables are missing.

    Raises:
        ConfigError: naming the missing variables and how to start the tool.
    """
    names, fix = LAUNCHER_VARIABLES.get(launcher, ((), ''))
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise ConfigError(f'--launcher {launcher}: {", ".join(missing)} not set in the '
                          f'environment; {fix}, or drop --launcher for one process')


def slurm_process_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The torch ``env://`` variables for one process of a Slurm job step.

    ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` come from ``SLURM_PROCID``,
    ``SLURM_NTASKS`` and ``SLURM_LOCALID``; ``MASTER_ADDR`` is kept if set, otherwise the
    job's first host; ``MASTER_PORT`` is kept if set, otherwise 29500.
    """
    master_addr = environ.get('MASTER_ADDR')
    if not master_addr:
        master_addr = subprocess.check_output(
            ['scontrol', 'show', 'hostnames', environ['SLURM_NODELIST']],
            text=True).split()[0]
    return dict(RANK=environ['SLURM_PROCID'], WORLD_SIZE=environ['SLURM_NTASKS'],
                LOCAL_RANK=environ['SLURM_LOCALID'], MASTER_ADDR=master_addr,
                MASTER_PORT=environ.get('MASTER_PORT', DEFAULT_MASTER_PORT))


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Record ``launcher`` in ``cfg``; on a machine without CUDA also start gloo.

    With CUDA, nothing else changes: mmengine initialises NCCL (``env_cfg.dist_cfg``) as
    usual. Without CUDA and with a launcher, this joins the gloo process group described by
    the torch ``env://`` variables (set by torchrun, or derived from Slurm's) and sets
    ``cfg.model_wrapper_cfg`` to a DDP wrapper with ``device_ids=None``.

    Args:
        cfg: the config the Runner will be built from; changed in place.
        launcher: one of :data:`LAUNCHERS`.

    Raises:
        ConfigError: the launcher's environment variables are missing (see
            :func:`_check_launcher_environment`).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    _check_launcher_environment(launcher, os.environ)
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher == 'slurm':
        os.environ.update(slurm_process_env(os.environ))
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo', init_method='env://')
    cfg.env_cfg = {**cfg.get('env_cfg', {}), 'dist_cfg': dict(backend='gloo')}
    wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.update(cfg.get('model_wrapper_cfg') or {})
    wrapper_cfg['device_ids'] = None  # DDP on CPU modules takes no device ids
    cfg.model_wrapper_cfg = wrapper_cfg

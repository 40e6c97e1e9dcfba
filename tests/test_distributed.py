"""Distributed training on a CPU-only machine: torchrun + gloo, and the Slurm mapping."""
import os
import re
import socket
import subprocess

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from mmrepvgg.engine.runner import _setup_distributed as setup_distributed
from mmrepvgg.engine.runner import _slurm_process_env as slurm_process_env

from conftest import REPO_ROOT

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_dist_train_splits_the_data_over_two_gloo_processes(digits_workspace, tool_env,
                                                            tmp_path):
    # 128 images at batch 32: 4 iterations per epoch alone, 2 per process with 2 processes.
    result = subprocess.run(
        ['bash', os.path.join(REPO_ROOT, 'tools/dist_train.sh'), DIGITS_CONFIG, '2',
         '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
         'train_dataloader.dataset.indices=128', 'val_dataloader.dataset.indices=64'],
        cwd=digits_workspace, env={**tool_env, 'PORT': str(free_port())},
        capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert 'Distributed training: True' in output
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\]', output), output[-3000:]
    assert (tmp_path / 'epoch_1.pth').is_file()


def test_slurm_variables_map_to_torch_env_variables():
    environ = dict(SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_LOCALID='1',
                   MASTER_ADDR='node-a', SLURM_NODELIST='node-[a-b]')
    assert slurm_process_env(environ) == dict(RANK='3', WORLD_SIZE='8', LOCAL_RANK='1',
                                              MASTER_ADDR='node-a', MASTER_PORT='29500')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo path is for CPU machines')
def test_pytorch_launcher_without_cuda_joins_gloo_and_wraps_ddp_without_device_ids(
        monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    try:
        setup_distributed(cfg, 'pytorch')
        assert torch_dist.get_backend() == 'gloo'
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    assert cfg.launcher == 'pytorch'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None


def test_no_launcher_leaves_the_config_single_process():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_distributed(cfg, 'none')
    assert cfg.launcher == 'none' and 'model_wrapper_cfg' not in cfg
    assert not torch_dist.is_initialized()


@pytest.mark.parametrize('script,args,expected_tail', [
    ('slurm_train.sh', ['part', 'job', 'CFG.py', 'WORK'],
     ['train.py', 'CFG.py', '--work-dir=WORK', '--amp', '--launcher=slurm']),
    ('slurm_test.sh', ['part', 'job', 'CFG.py', 'CKPT.pth'],
     ['test.py', 'CFG.py', 'CKPT.pth', '--amp', '--launcher=slurm']),
])
def test_slurm_scripts_hand_the_tool_and_its_arguments_to_srun(script, args, expected_tail,
                                                               tmp_path):
    fake_srun = tmp_path / 'srun'
    fake_srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake_srun.chmod(0o755)
    result = subprocess.run(
        ['bash', os.path.join(REPO_ROOT, 'tools', script), *args, '--amp'],
        env={**os.environ, 'PATH': f'{tmp_path}:{os.environ["PATH"]}', 'GPUS': '16'},
        capture_output=True, text=True, check=True)
    srun_args = result.stdout.split()
    assert srun_args[:2] == ['-p', 'part'] and '--ntasks=16' in srun_args
    assert os.path.basename(srun_args[-len(expected_tail)]) == expected_tail[0]
    assert srun_args[-len(expected_tail) + 1:] == expected_tail[1:]

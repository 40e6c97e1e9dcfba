"""mmseg's, mmdet's and mmpretrain's own packaged tools (``<pkg>/.mim/tools/*.py``, what
``mim train`` runs), given the shipped configs, build the project's Runner (mmseg's
``test.py``: its guard hook): they read checkpoints with the project's reader, never run a
checkpoint's stored config text, fit ``load_from`` exactly and check a resumed training
state (docs/trust_in_other_tools.md).

Each tool runs as users run it, a subprocess in a folder holding the digit canvases at the
configs' ``data/digit_canvases``. The reference for what a tool would do without the
project's Runner is mmengine's own ``Runner``: it runs ``meta['config']`` on ``--resume``
and loads non-fitting weights with a log line.
"""
import os
import subprocess
import sys

import mmdet
import mmpretrain
import mmseg
import pytest
import torch
from conftest import REPO_ROOT

from mmrepvgg.checkpoint import load_checkpoint_file
from mmrepvgg.datasets import prepare_digit_canvases
from mmrepvgg.datasets.digits import prepare_digits

SEG_CONFIG = os.path.join(REPO_ROOT, 'configs/mmseg/digits/fcn_repvgg-A0-d8_digits.py')
DET_CONFIG = os.path.join(REPO_ROOT, 'configs/mmdet/digits/fcos_repvgg-A0_fpn_digits.py')
CLS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')
TOOL_CONFIGS = {'mmseg': (mmseg, SEG_CONFIG), 'mmdet': (mmdet, DET_CONFIG),
                'mmpretrain': (mmpretrain, CLS_CONFIG)}
# Two iterations of two canvases: enough for a training checkpoint with optimizer state.
SEG_SHORT_RUN = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                 'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=2',
                 'val_dataloader.batch_size=2']


def packaged_tool(package, name: str) -> str:
    return os.path.join(os.path.dirname(package.__file__), '.mim', 'tools', name)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A folder with data/digit_canvases and data/digits, where the digits configs look
    for them."""
    folder = tmp_path_factory.mktemp('openmmlab_tools')
    prepare_digit_canvases(str(folder / 'data' / 'digit_canvases'), num_train=4, num_val=2)
    prepare_digits(str(folder / 'data' / 'digits'))
    return folder


def run_tool(workspace, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=300)


def plain_data_checkpoint_running_code(path, marker) -> str:
    """A checkpoint of dicts, strings, ints and one tensor (``torch.load(weights_only=True)``
    admits it) whose ``meta['config']`` is Python writing ``marker``."""
    code = f'open({str(marker)!r}, "w").close()'
    torch.save({'state_dict': {'weight': torch.ones(2)}, 'message_hub': {},
                'meta': {'epoch': 1, 'iter': 1, 'config': code}}, path)
    torch.load(path, weights_only=True)  # plain data indeed
    return str(path)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('tool, resume_args', [
    ('mmseg', ['--resume', '--cfg-options', 'load_from={evil}']),
    ('mmdet', ['--resume', '{evil}']),
    ('mmpretrain', ['--resume', '{evil}']),
], ids=['mmseg', 'mmdet', 'mmpretrain'])
def test_packaged_train_resume_never_runs_the_checkpoints_config(
        workspace, tmp_path, tool, resume_args):
    marker = tmp_path / 'PWNED'
    evil = plain_data_checkpoint_running_code(tmp_path / 'evil.pth', marker)
    package, config = TOOL_CONFIGS[tool]
    result = run_tool(workspace, packaged_tool(package, 'train.py'), config,
                      '--work-dir', str(tmp_path / 'work'),
                      *[arg.format(evil=evil) for arg in resume_args])
    assert not marker.exists()
    assert result.returncode != 0
    # The project's Runner refused it in one line (mmengine's would have gone on).
    assert last_line(result).startswith(f'mmrepvgg.checkpoint.errors.CheckpointError: {evil}: ')


@pytest.mark.parametrize('tool', ['mmseg', 'mmdet'])
def test_packaged_test_refuses_weights_that_do_not_fit(workspace, tmp_path, tool):
    """mmengine's Runner would load nothing of it, warn, and evaluate random weights.
    mmdet's test.py builds the config's runner_type; mmseg's builds mmengine's Runner
    whatever the config says, and the configs' RepVGGCheckpointGuard hook loads instead."""
    other = plain_data_checkpoint_running_code(tmp_path / 'other.pth', tmp_path / 'PWNED')
    package, config = TOOL_CONFIGS[tool]
    result = run_tool(workspace, '-m', 'mmrepvgg.dense.mmcv_lite',
                      packaged_tool(package, 'test.py'), config, other,
                      '--work-dir', str(tmp_path / 'work'))
    assert result.returncode != 0
    assert last_line(result) == (
        f'mmrepvgg.checkpoint.errors.CheckpointError: {other}: holds no RepVGG block weights '
        'in the mmrepvgg/mmpretrain, official or timm layout (first keys: weight)')


@pytest.fixture(scope='module')
def seg_training_checkpoint(workspace, tmp_path_factory):
    """iter_2.pth of two iterations of mmseg's own tools/train.py on the digits config."""
    work_dir = tmp_path_factory.mktemp('seg_work')
    result = run_tool(workspace, packaged_tool(mmseg, 'train.py'), SEG_CONFIG,
                      '--work-dir', str(work_dir), '--cfg-options', *SEG_SHORT_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir / 'iter_2.pth'


def resume_seg(workspace, checkpoint, work_dir) -> subprocess.CompletedProcess:
    longer_run = [option.replace('=2', '=3') for option in SEG_SHORT_RUN[:3]]
    return run_tool(workspace, packaged_tool(mmseg, 'train.py'), SEG_CONFIG,
                    '--work-dir', str(work_dir), '--resume', '--cfg-options',
                    f'load_from={checkpoint}', *longer_run, *SEG_SHORT_RUN[3:])


def test_packaged_segmentation_train_resumes_its_own_checkpoint(
        workspace, seg_training_checkpoint, tmp_path):
    """mmengine's own Runner cannot: torch's weights-only load refuses the message hub's
    HistoryBuffer."""
    result = resume_seg(workspace, seg_training_checkpoint, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'iter_3.pth').is_file()


def test_packaged_segmentation_test_evaluates_a_fitting_checkpoint(
        workspace, seg_training_checkpoint, tmp_path):
    result = run_tool(workspace, packaged_tool(mmseg, 'test.py'), SEG_CONFIG,
                      str(seg_training_checkpoint), '--work-dir', str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Load checkpoint from {seg_training_checkpoint}' in result.stdout + result.stderr
    assert 'mIoU' in result.stdout + result.stderr


def test_packaged_segmentation_train_refuses_a_momentum_buffer_of_another_shape(
        workspace, seg_training_checkpoint, tmp_path):
    checkpoint = load_checkpoint_file(str(seg_training_checkpoint))
    buffer = checkpoint['optimizer']['state'][0]['momentum_buffer']
    checkpoint['optimizer']['state'][0]['momentum_buffer'] = buffer[:1]
    tampered = tmp_path / 'tampered.pth'
    torch.save(checkpoint, tampered)
    result = resume_seg(workspace, tampered, tmp_path / 'work')
    assert result.returncode != 0
    assert last_line(result) == (
        f'mmrepvgg.checkpoint.errors.CheckpointError: {tampered}: cannot resume from it, its '
        'training state does not fit this run (optimizer.state.0.momentum_buffer is a '
        f'tensor of shape {(1, *buffer.shape[1:])}, its parameter has shape '
        f'{tuple(buffer.shape)}); resume with the config it was saved by, or start from its '
        f'weights with --cfg-options load_from={tampered}')
    assert not (tmp_path / 'work' / 'iter_3.pth').exists()

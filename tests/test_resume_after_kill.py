"""kill -9 during training, then ``tools/train.py --resume``: the run finishes with the same
final metrics as an uninterrupted run with the same seed.

Uses configs/digits/repvgg-A0_digits.py on a 640-image subset for 2 epochs (20 iterations
each) on CPU. Tolerance: the final top-1 accuracies on the 360 val images may differ by at
most one image (0.28 %); on one machine they are equal.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from checkpoint_fixtures import REPO_ROOT

from mmrepvgg.datasets.digits import prepare_digits

CONFIG = REPO_ROOT / 'configs' / 'digits' / 'repvgg-A0_digits.py'
ONE_VAL_IMAGE = 100 / 360  # percent
MID_EPOCH_2 = re.compile(r'Epoch\(train\) \[2\]\[\s*2/20\]')
FINAL_ACCURACY = re.compile(r'Epoch\(val\) \[2\]\[\d+/\d+\]\s+accuracy/top1: ([0-9.]+)')


def train_command(data_root, work_dir, resume=False):
    options = [f'{loader}.dataset.data_root={data_root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader')
                for key in ('num_workers=0', 'persistent_workers=False')]
    options += ['train_dataloader.dataset.indices=640', 'train_cfg.max_epochs=2',
                'default_hooks.logger.interval=2']
    return ([sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(CONFIG),
             '--work-dir', str(work_dir)] + (['--resume'] if resume else [])
            + ['--cfg-options'] + options)


def final_accuracy(log_text):
    matches = FINAL_ACCURACY.findall(log_text)
    assert matches, log_text[-2000:]
    return float(matches[-1])


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_same_final_accuracy(tmp_path):
    data_root = prepare_digits(str(tmp_path / 'digits')).data_root
    uninterrupted = subprocess.run(
        train_command(data_root, tmp_path / 'uninterrupted'), capture_output=True,
        text=True, cwd=REPO_ROOT)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    work_dir = tmp_path / 'killed'
    log_path = tmp_path / 'killed.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen(train_command(data_root, work_dir), stdout=log,
                                   stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        while process.poll() is None and not MID_EPOCH_2.search(log_path.read_text()):
            time.sleep(0.05)  # polling the child's log, not waiting for a result
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, 'training ended before it was killed'
    assert (work_dir / 'epoch_1.pth').exists() and not (work_dir / 'epoch_2.pth').exists()

    resumed = subprocess.run(train_command(data_root, work_dir, resume=True),
                             capture_output=True, text=True, cwd=REPO_ROOT)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1' in resumed_log
    assert abs(final_accuracy(resumed_log) - final_accuracy(
        uninterrupted.stdout + uninterrupted.stderr)) <= ONE_VAL_IMAGE + 1e-6

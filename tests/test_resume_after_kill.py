"""kill -9 during training, then ``tools/train.py --resume``: the run finishes with the same
final metrics as an uninterrupted run with the same seed.

Uses configs/digits/repvgg-A0_digits.py on a 640-image subset for 2 epochs (20 iterations
each) on CPU. The crash is deterministic: a hook SIGKILLs the training process itself right
after iteration 22 (the second of epoch 2), after epoch_1.pth was saved. Tolerance: the
final top-1 accuracies on the 360 val images may differ by at most one image (0.28 %); on
one machine they are equal.
"""
import os
import re
import signal
import subprocess
import sys

import pytest
from checkpoint_fixtures import REPO_ROOT

from mmrepvgg.datasets.digits import prepare_digits

CONFIG = REPO_ROOT / 'configs' / 'digits' / 'repvgg-A0_digits.py'
ONE_VAL_IMAGE = 100 / 360  # percent
KILL_AFTER_ITERATION = 22  # epoch 2, iteration 2 of 20
KILL_HOOK = """
import os
import signal

from mmengine.hooks import Hook

from mmrepvgg.registry import HOOKS


@HOOKS.register_module()
class KillAtIteration(Hook):
    \"\"\"SIGKILL this process right after training iteration ``iteration`` (from 1).\"\"\"

    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:  # runner.iter counts the iterations before
            os.kill(os.getpid(), signal.SIGKILL)
"""
FINAL_ACCURACY = re.compile(r'Epoch\(val\) \[2\]\[\d+/\d+\]\s+accuracy/top1: ([0-9.]+)')


def killing_config(folder):
    """A config that is the digits config plus the hook that kills the run; the hook's
    module goes beside it, on the child's PYTHONPATH."""
    (folder / 'kill_at_iteration.py').write_text(KILL_HOOK)
    config = folder / 'repvgg-A0_digits_killed.py'
    config.write_text(f"_base_ = [{str(CONFIG)!r}]\n"
                      "custom_imports = dict(imports=['mmrepvgg', 'kill_at_iteration'], "
                      "allow_failed_imports=False)\n"
                      f"custom_hooks = [dict(type='KillAtIteration', "
                      f"iteration={KILL_AFTER_ITERATION})]\n")
    return config


def train_command(data_root, work_dir, resume=False, config=CONFIG):
    options = [f'{loader}.dataset.data_root={data_root}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader')
                for key in ('num_workers=0', 'persistent_workers=False')]
    options += ['train_dataloader.dataset.indices=640', 'train_cfg.max_epochs=2',
                'default_hooks.logger.interval=2']
    return ([sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(config),
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
    hook_folder = tmp_path / 'hook'
    hook_folder.mkdir()
    config = killing_config(hook_folder)
    python_path = os.pathsep.join(filter(None, [str(hook_folder),
                                                os.environ.get('PYTHONPATH')]))
    killed = subprocess.run(train_command(data_root, work_dir, config=config),
                            capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**os.environ, 'PYTHONPATH': python_path})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (work_dir / 'epoch_1.pth').exists() and not (work_dir / 'epoch_2.pth').exists()

    resumed = subprocess.run(train_command(data_root, work_dir, resume=True),
                             capture_output=True, text=True, cwd=REPO_ROOT)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1' in resumed_log
    assert abs(final_accuracy(resumed_log) - final_accuracy(
        uninterrupted.stdout + uninterrupted.stderr)) <= ONE_VAL_IMAGE + 1e-6

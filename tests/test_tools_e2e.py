"""The command-line tools as users run them: subprocesses on real digits data (the
session's trained checkpoint), and one clear error line for bad input (in process: what
a subprocess would add is tested by the round trip)."""
import os
import subprocess
import sys

import pytest

from mmrepvgg.apis import ConfigError
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint
from mmrepvgg.engine import load_repvgg_config

from conftest import REPO_ROOT, load_tool
from tool_output import parse_test_metrics

TRAIN_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')
DEPLOY_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/deploy/repvgg-A0_deploy_digits.py')
train_tool = load_tool('tools/train.py')


def run_tool(tool, *args, cwd, env):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', tool), *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_convert_test_round_trip_keeps_accuracy(digits_workspace, digits_train_checkpoint,
                                                tool_env):
    work_dir = str(digits_workspace / 'round_trip')
    os.makedirs(work_dir)
    train_checkpoint = digits_train_checkpoint
    deploy_checkpoint = os.path.join(work_dir, 'epoch_1_deploy.pth')
    converted = run_tool('reparameterize_repvgg.py', TRAIN_CONFIG, train_checkpoint,
                         deploy_checkpoint, cwd=digits_workspace, env=tool_env)
    assert converted.returncode == 0, converted.stderr[-2000:]

    top1 = {}
    for form, config, checkpoint in (('train', TRAIN_CONFIG, train_checkpoint),
                                     ('deploy', DEPLOY_CONFIG, deploy_checkpoint)):
        tested = run_tool('test.py', config, checkpoint, '--work-dir', work_dir,
                          '--cfg-options', 'test_dataloader.dataset.indices=64',
                          cwd=digits_workspace, env=tool_env)
        assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr[-2000:]
        top1[form] = parse_test_metrics(tested.stdout)['accuracy/top1']
    assert top1['deploy'] == top1['train']


@pytest.mark.parametrize('args, message', [
    (['configs/nope.py'], 'no such config file'),
    (['TRAIN', '--cfg-options', 'model.backbone.archh=A1'], "did you mean 'model.backbone.arch'"),
    (['TRAIN', '--cfg-options', 'modle.backbone.arch=A1'], 'modle is not in'),
    (['TRAIN', '--amp'], '--amp needs a GPU'),
    (['TRAIN', '--resume', 'missing.pth'], 'no such checkpoint file'),
])
def test_train_tool_rejects_bad_input_with_one_error_line(args, message, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [TRAIN_CONFIG if arg == 'TRAIN' else arg for arg in args]
    assert train_tool.main(args) == 1
    errors = capsys.readouterr().err
    assert errors.startswith('error: ') and errors.count('\n') == 1, errors
    assert message in errors
    assert not os.path.exists(tmp_path / 'work_dirs')


@pytest.mark.parametrize('omp_num_threads', [None, '1'])
def test_train_tool_says_to_set_omp_num_threads_on_a_cpu(omp_num_threads, tmp_path,
                                                         monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if omp_num_threads is None:
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    else:
        monkeypatch.setenv('OMP_NUM_THREADS', omp_num_threads)
    monkeypatch.setattr('torch.cuda.is_available', lambda: False)
    assert train_tool.main(['configs/nope.py']) == 1
    notice = 'notice: OMP_NUM_THREADS is not set'
    assert (notice in capsys.readouterr().out) == (omp_num_threads is None)


@pytest.mark.parametrize('scope, backbone, message', [
    ('mmrepvgg', 'ResNet', "not a RepVGG config.*'ResNet'"),  # another backbone
    ('mmpretrain', 'RepVGG', "default_scope = 'mmrepvgg'"),  # mmpretrain's RepVGG
])
def test_config_of_another_backbone_or_scope_is_rejected(scope, backbone, message, tmp_path):
    config = tmp_path / 'other.py'
    config.write_text(f"default_scope = '{scope}'\n"
                      f"model = dict(type='ImageClassifier', backbone=dict(type='{backbone}'))\n")
    with pytest.raises(ConfigError, match=message):
        load_repvgg_config(str(config))


def test_new_option_keys_are_accepted_but_near_misses_are_not():
    cfg = load_repvgg_config(TRAIN_CONFIG, {'train_dataloader.dataset.indices': 8,
                                            'train_cfg.max_epochs': 1})
    assert cfg.train_dataloader.dataset.indices == 8 and cfg.train_cfg.max_epochs == 1
    with pytest.raises(ConfigError, match="did you mean 'train_cfg.max_epochs'"):
        load_repvgg_config(TRAIN_CONFIG, {'train_cfg.max_epoch': 1})


@pytest.mark.parametrize('checkpoint_form, model_form, hint', [
    ('train', 'deploy', 'convert it with tools/reparameterize_repvgg.py'),
    ('deploy', 'train', 'test it with a config from configs/deploy/'),
])
def test_checkpoint_of_the_other_form_is_rejected_before_testing(checkpoint_form, model_form,
                                                                 hint, tmp_path):
    from mmrepvgg.models import RepVGG
    backbones = {'train': RepVGG('A0'), 'deploy': RepVGG('A0', deploy=True)}
    checkpoint = {'state_dict': backbones[checkpoint_form].state_dict()}
    with pytest.raises(CheckpointError, match=hint):
        load_checkpoint(backbones[model_form], checkpoint, name='checkpoint.pth')

"""Fitting checkpoints to models (mmrepvgg.checkpoint.fitting) and the Runner that uses it:
what is refused, what is accepted, and what the messages say."""
import argparse
import contextlib
import io
import os

import pytest
import torch
from checkpoint_fixtures import REPO_ROOT, trained_classifier, write_classifier_config
from mmengine.config import Config

from mmrepvgg.apis import build_train_model, convert_checkpoint
from mmrepvgg.checkpoint import LAYOUTS, CheckpointError, from_project_layout, load_fitted_state
from mmrepvgg.engine import load_repvgg_config
from mmrepvgg.models import RepVGG, build_model, repvgg_classifier_cfg

from conftest import load_tool

DIGITS_CONFIG = str(REPO_ROOT / 'configs' / 'digits' / 'repvgg-A0_digits.py')
TINY_ARCH = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.5))


def tiny_classifier(num_classes=3, **head):
    cfg = repvgg_classifier_cfg(TINY_ARCH, num_classes=num_classes)
    cfg['head'].update(head)
    return build_model(cfg)


def test_head_of_other_input_width_is_not_reported_as_a_class_count():
    model = tiny_classifier()
    state_dict = dict(model.state_dict())
    state_dict['head.fc.weight'] = torch.zeros(3, 7)
    with pytest.raises(CheckpointError) as error:
        load_fitted_state(model, state_dict, 'ck.pth')
    assert 'takes 7 input channels' in str(error.value)
    assert 'classes' not in str(error.value)


def test_arch_mismatch_of_an_unpublished_shape_reads_as_a_sentence():
    checkpoint = build_model(repvgg_classifier_cfg(
        dict(TINY_ARCH, width_factor=(0.5, 0.5, 0.5, 0.5)), num_classes=3)).state_dict()
    with pytest.raises(CheckpointError, match='use a config that builds it$') as error:
        load_fitted_state(tiny_classifier(), checkpoint, 'ck.pth')
    assert 'holds an unpublished RepVGG (stem 32' in str(error.value)
    assert 'the an' not in str(error.value)


def test_state_dict_without_batch_counters_loads_with_the_counters_at_zero():
    source = tiny_classifier()
    source.backbone.stem.branch_3x3.norm.num_batches_tracked.fill_(7)
    without_counters = {key: value for key, value in source.state_dict().items()
                        if not key.endswith('num_batches_tracked')}
    model = tiny_classifier()
    fitted = load_fitted_state(model, without_counters, 'ck.pth')
    assert len(fitted.filled) == sum(key.endswith('num_batches_tracked')
                                     for key in model.state_dict())
    assert int(model.backbone.stem.branch_3x3.norm.num_batches_tracked) == 0
    for key, value in without_counters.items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_integer_tensor_in_place_of_a_float_one_is_refused():
    model = tiny_classifier()
    state_dict = dict(model.state_dict())
    state_dict['head.fc.bias'] = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(CheckpointError, match="'head.fc.bias' is torch.int64, the model's "
                                              'torch.float32'):
        load_fitted_state(model, state_dict, 'ck.pth')


def test_half_precision_checkpoint_loads_into_a_float_model():
    source = tiny_classifier()
    half = {key: value.half() if value.is_floating_point() else value
            for key, value in source.state_dict().items()}
    model = tiny_classifier()
    load_fitted_state(model, half, 'ck.pth')
    torch.testing.assert_close(model.head.fc.weight, half['head.fc.weight'].float())


def test_finetuning_skips_a_head_of_another_size_and_lists_it():
    source = tiny_classifier(num_classes=1000)
    model = tiny_classifier(num_classes=3)
    initial_head = model.head.fc.weight.detach().clone()
    fitted = load_fitted_state(model, source.state_dict(), 'in1k.pth', mode='finetune')
    assert [entry.split(' ')[0] for entry in fitted.skipped] == ['head.fc.bias',
                                                                  'head.fc.weight']
    assert fitted.skipped[0] == 'head.fc.bias ((1000,) in the checkpoint, (3,) in the model)'
    torch.testing.assert_close(model.head.fc.weight, initial_head)
    torch.testing.assert_close(model.backbone.stem.branch_3x3.conv.weight,
                               source.backbone.stem.branch_3x3.conv.weight)


def test_finetuning_reads_weights_published_in_the_official_layout():
    source = tiny_classifier(num_classes=1000)
    state_dict = source.state_dict()
    official = from_project_layout(
        {key[len('backbone.'):]: value for key, value in state_dict.items()
         if key.startswith('backbone.')},
        {key: value for key, value in state_dict.items() if key.startswith('head.')},
        LAYOUTS['official'])
    assert 'stage0.rbr_dense.conv.weight' in official and 'linear.weight' in official
    model = tiny_classifier(num_classes=3)
    fitted = load_fitted_state(model, official, 'RepVGG-tiny-train.pth', mode='finetune')
    assert fitted.source.layout == 'official'
    assert [entry.split(' ')[0] for entry in fitted.skipped] == ['head.fc.bias',
                                                                  'head.fc.weight']
    torch.testing.assert_close(model.backbone.stage_4[0].branch_3x3.norm.running_var,
                               source.backbone.stage_4[0].branch_3x3.norm.running_var)


def test_finetuning_refuses_a_backbone_that_does_not_fit():
    source = build_model(repvgg_classifier_cfg(dict(TINY_ARCH, num_blocks=(1, 2, 1, 1)),
                                               num_classes=3))
    with pytest.raises(CheckpointError, match='holds an unpublished RepVGG .* but the '
                                              'config builds an unpublished RepVGG'):
        load_fitted_state(tiny_classifier(), source.state_dict(), 'ck.pth', mode='finetune')


def test_classifier_saved_under_a_wrapper_prefix_converts_with_its_head(tmp_path):
    config = write_classifier_config(tmp_path)
    model = trained_classifier(config)
    wrapped = {f'model.{key}': value for key, value in model.state_dict().items()}
    torch.save({'state_dict': wrapped}, tmp_path / 'wrapped.pth')
    report = convert_checkpoint(str(config), str(tmp_path / 'wrapped.pth'),
                                str(tmp_path / 'deploy.pth'))
    assert report.notices == []
    deployed = torch.load(tmp_path / 'deploy.pth', weights_only=True)['state_dict']
    torch.testing.assert_close(deployed['head.fc.weight'], model.head.fc.weight)


@pytest.mark.parametrize('backbone_type, default_scope', [('RepVGG', 'mmrepvgg'),
                                                          ('mmrepvgg.RepVGG', 'mmpretrain'),
                                                          ('mmrepvgg.RepVGG', None)])
def test_configs_naming_our_repvgg_either_way_are_accepted_and_build_it(
        backbone_type, default_scope, tmp_path):
    model_cfg = repvgg_classifier_cfg(TINY_ARCH, deploy=True, num_classes=3)
    model_cfg['backbone']['type'] = backbone_type
    path = tmp_path / 'config.py'
    Config(dict(default_scope=default_scope, model=model_cfg)).dump(str(path))
    load_repvgg_config(str(path))
    model = build_train_model(str(path))
    assert isinstance(model.backbone, RepVGG) and not model.backbone.deploy


def run_tool_in_process(tool, argv, cwd):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            contextlib.chdir(cwd):
        exit_code = load_tool(f'tools/{tool}.py').main(argv)
    return exit_code, out.getvalue() + err.getvalue()


def save_digits_checkpoint(path, arch='A0', num_classes=10, meta=None, drop=()):
    model = trained_classifier(write_classifier_config(path.parent, arch, num_classes))
    state_dict = {key: value for key, value in model.state_dict().items()
                  if not (drop and key.endswith(drop))}
    torch.save({'state_dict': state_dict, 'meta': meta or {'epoch': 1}}, path)
    return str(path)


NO_WORKERS = [f'{loader}.{option}' for loader in ('train_dataloader', 'val_dataloader',
                                                    'test_dataloader')
              for option in ('num_workers=0', 'persistent_workers=False')]


class CfgNode(dict):
    """Stands for yacs' config node, which the official training script stores in meta."""


@pytest.mark.parametrize('case', ['argparse.Namespace in meta', 'a yacs CfgNode in meta',
                                  'no num_batches_tracked'])
def test_test_tool_accepts_benign_checkpoints_and_reports_metrics(case, digits_workspace,
                                                                   tmp_path):
    if case == 'argparse.Namespace in meta':
        checkpoint = save_digits_checkpoint(
            tmp_path / 'ck.pth', meta={'epoch': 1, 'args': argparse.Namespace(lr=0.1)})
    elif case == 'a yacs CfgNode in meta':
        checkpoint = save_digits_checkpoint(
            tmp_path / 'ck.pth', meta={'epoch': 1, 'config': CfgNode(lr=0.1)})
    else:
        checkpoint = save_digits_checkpoint(tmp_path / 'ck.pth', drop='num_batches_tracked')
    exit_code, output = run_tool_in_process(
        'test', [DIGITS_CONFIG, checkpoint, '--work-dir', str(tmp_path / 'work'),
                 '--cfg-options', 'test_dataloader.dataset.indices=16', *NO_WORKERS],
        digits_workspace)
    assert exit_code == 0, output[-2000:]
    assert 'test metrics: {"accuracy/top1": ' in output


def test_finetuning_from_a_1000_class_checkpoint_lists_the_skipped_head_once(
        digits_workspace, tmp_path):
    checkpoint = save_digits_checkpoint(tmp_path / 'in1k.pth', num_classes=1000)
    exit_code, output = run_tool_in_process(
        'train', [DIGITS_CONFIG, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                  f'load_from={checkpoint}', 'train_cfg.max_epochs=1',
                  'train_dataloader.dataset.indices=32', 'val_dataloader.dataset.indices=16',
                  *NO_WORKERS], digits_workspace)
    assert exit_code == 0, output[-2000:]
    notices = [line for line in output.splitlines() if 'notice: ' in line]
    assert len(notices) == 1, notices
    assert '2 tensors not loaded' in notices[0]
    assert 'head.fc.weight ((1000, 1280) in the checkpoint, (10, 1280) in the model)' \
        in notices[0]
    assert os.path.isfile(tmp_path / 'work' / 'epoch_1.pth')

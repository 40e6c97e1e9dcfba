"""Fitting checkpoints to models (mmrepvgg.checkpoint.fitting): what is refused, what is
accepted, and what the messages say. The tools that use it are run on bad and formerly
refused inputs in tests/test_checkpoint_bad_inputs.py."""
import pytest
import torch
from checkpoint_fixtures import trained_classifier, write_classifier_config
from mmengine.config import Config

from mmrepvgg.apis import convert_checkpoint
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint
from mmrepvgg.checkpoint._layouts import LAYOUTS, from_project_layout
from mmrepvgg.engine import load_repvgg_config
from mmrepvgg.models import (RepVGG, RepVGGBlock, build_model, reparameterize_model,
                             repvgg_classifier_cfg)

TINY_ARCH = dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.5))


def tiny_classifier(num_classes=3):
    return build_model(repvgg_classifier_cfg(TINY_ARCH, num_classes=num_classes))


def test_head_of_other_input_width_is_not_reported_as_a_class_count():
    model = tiny_classifier()
    state_dict = dict(model.state_dict())
    state_dict['head.fc.weight'] = torch.zeros(3, 7)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(model, state_dict, name='ck.pth')
    assert 'takes 7 input channels' in str(error.value)
    assert 'classes' not in str(error.value)


def test_arch_mismatch_of_an_unpublished_shape_reads_as_a_sentence():
    checkpoint = build_model(repvgg_classifier_cfg(
        dict(TINY_ARCH, width_factor=(0.5, 0.5, 0.5, 0.5)), num_classes=3)).state_dict()
    with pytest.raises(CheckpointError, match='use a config that builds it$') as error:
        load_checkpoint(tiny_classifier(), checkpoint, name='ck.pth')
    assert 'holds an unpublished RepVGG (stem 32' in str(error.value)
    assert 'the an' not in str(error.value)


def test_state_dict_without_batch_counters_loads_with_the_counters_at_zero():
    source = tiny_classifier()
    source.backbone.stem.branch_3x3.norm.num_batches_tracked.fill_(7)
    without_counters = {key: value for key, value in source.state_dict().items()
                        if not key.endswith('num_batches_tracked')}
    model = tiny_classifier()
    fitted = load_checkpoint(model, without_counters, name='ck.pth')
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
        load_checkpoint(model, state_dict, name='ck.pth')


def test_half_precision_checkpoint_loads_into_a_float_model():
    source = tiny_classifier()
    half = {key: value.half() if value.is_floating_point() else value
            for key, value in source.state_dict().items()}
    model = tiny_classifier()
    load_checkpoint(model, half, name='ck.pth')
    torch.testing.assert_close(model.head.fc.weight, half['head.fc.weight'].float())


def test_load_checkpoint_reads_a_path_and_names_it_in_messages(tmp_path):
    source = tiny_classifier()
    path = tmp_path / 'epoch_3.pth'
    torch.save({'state_dict': source.state_dict(), 'meta': {'epoch': 3}}, path)
    model = tiny_classifier()
    fitted = load_checkpoint(model, str(path))
    assert fitted.skipped == [] and fitted.source.form == 'train'
    for key, value in torch.load(path, weights_only=True)['state_dict'].items():
        torch.testing.assert_close(model.state_dict()[key], value)
    deeper = build_model(repvgg_classifier_cfg(dict(TINY_ARCH, num_blocks=(2, 1, 1, 1)),
                                               num_classes=3))
    with pytest.raises(CheckpointError, match=f'^{path}: holds an unpublished RepVGG'):
        load_checkpoint(deeper, str(path))


def test_load_checkpoint_of_a_dict_without_a_name_says_the_checkpoint():
    state_dict = dict(tiny_classifier().state_dict())
    del state_dict['head.fc.bias']
    with pytest.raises(CheckpointError, match="^the checkpoint: lacks 1 tensor the model "
                                              "needs, e.g. 'head.fc.bias'"):
        load_checkpoint(tiny_classifier(), state_dict)


def test_load_checkpoint_reads_a_zoo_name_from_its_published_url(monkeypatch):
    from mmrepvgg.checkpoint import fitting
    from mmrepvgg.model_zoo import find_model
    name = 'repvgg-A0_deploy_3rdparty_4xb64-coslr-120e_in1k'
    read = []
    monkeypatch.setattr(fitting, 'load_checkpoint_file',
                        lambda source: read.append(source) or {'state_dict': {}})
    with pytest.raises(CheckpointError, match='^https://.*: holds no tensors'):
        load_checkpoint(tiny_classifier(), name.upper())
    assert read == [find_model(name).weights]  # the published train-form file


def test_load_checkpoint_refuses_an_unknown_mode_before_reading():
    with pytest.raises(ValueError, match="mode must be one of .*'finetune'.*, got 'strict'"):
        load_checkpoint(tiny_classifier(), '/nonexistent.pth', mode='strict')


def test_convert_mode_fuses_the_model_for_a_deploy_checkpoint_exact_mode_refuses_it():
    source = tiny_classifier().eval()
    deploy_source = reparameterize_model(source)
    images = torch.randn(2, 3, 32, 32)
    model = tiny_classifier()
    fitted = load_checkpoint(model, deploy_source.state_dict(), 'convert')
    assert fitted.source.form == 'deploy'
    assert all(block.deploy for block in model.modules() if isinstance(block, RepVGGBlock))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images, mode='tensor'),
                                   source(images, mode='tensor'), rtol=1e-4, atol=1e-4)
    with pytest.raises(CheckpointError, match='is a deploy .* checkpoint but the config '
                                              'builds the train form'):
        load_checkpoint(tiny_classifier(), deploy_source.state_dict(), name='d.pth')


def test_finetuning_skips_a_head_of_another_size_and_lists_it():
    source = tiny_classifier(num_classes=1000)
    model = tiny_classifier(num_classes=3)
    initial_head = model.head.fc.weight.detach().clone()
    fitted = load_checkpoint(model, source.state_dict(), 'finetune', name='in1k.pth')
    skipped_keys = [entry.split(' ')[0] for entry in fitted.skipped]
    assert skipped_keys == ['head.fc.bias', 'head.fc.weight']
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
    fitted = load_checkpoint(model, official, 'finetune', name='RepVGG-tiny-train.pth')
    assert fitted.source.layout == 'official'
    skipped_keys = [entry.split(' ')[0] for entry in fitted.skipped]
    assert skipped_keys == ['head.fc.bias', 'head.fc.weight']
    torch.testing.assert_close(model.backbone.stage_4[0].branch_3x3.norm.running_var,
                               source.backbone.stage_4[0].branch_3x3.norm.running_var)


def test_finetuning_refuses_a_backbone_that_does_not_fit():
    source = build_model(repvgg_classifier_cfg(dict(TINY_ARCH, num_blocks=(1, 2, 1, 1)),
                                               num_classes=3))
    with pytest.raises(CheckpointError, match='holds an unpublished RepVGG .* but the '
                                              'config builds an unpublished RepVGG'):
        load_checkpoint(tiny_classifier(), source.state_dict(), 'finetune', name='ck.pth')


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

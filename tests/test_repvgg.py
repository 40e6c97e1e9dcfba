"""Specification of the RepVGG backbone: published sizes, exact deploy form, training.

Each full-size variant is built at most twice in this file (once for the exact deploy
form, once beside mmpretrain's class); the published sizes are tests/test_flops.py's."""
import contextlib
import copy

import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from torch import nn

import mmrepvgg
from mmrepvgg.models import (ARCH_SETTINGS, RepVGG, RepVGGArgumentError, RepVGGBlock,
                             reparameterize_blocks, repvgg_classifier_cfg)
from mmrepvgg.models.arch import SE_1_16
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_

from published_figures import PUBLISHED

VARIANTS = list(ARCH_SETTINGS)
SMALL_IMAGES = (2, 3, 32, 32)
# D2se's blocks (SE before the activation) at a width that builds in milliseconds.
TINY_SE_ARCH = dict(num_blocks=(1, 2, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.5),
                    se_cfg=SE_1_16)


def build_classifier(arch, deploy=False, num_classes=1000, **backbone_kwargs):
    """The published classifier, built through mmpretrain's registry in the mmrepvgg scope,
    as a config's ``type='ImageClassifier'`` would be."""
    init_default_scope('mmrepvgg')
    return MMPRETRAIN_MODELS.build(
        repvgg_classifier_cfg(arch, deploy, num_classes, **backbone_kwargs))


def test_all_published_variants_are_available():
    assert set(ARCH_SETTINGS) == set(PUBLISHED)


def test_config_type_repvgg_builds_this_projects_class_in_the_mmrepvgg_scope():
    model = build_classifier('A0')
    assert type(model.backbone) is RepVGG


@contextlib.contextmanager
def default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def train_and_deploy_backbones(arch, dtype, seed=0):
    with default_dtype(dtype):
        torch.manual_seed(seed)
        train_backbone = RepVGG(arch, out_indices=(0, 1, 2, 3))
    randomize_batch_norms_(train_backbone, seed=seed)
    train_backbone.eval()
    return train_backbone, mmrepvgg.repvgg_convert(train_backbone)


@pytest.mark.parametrize('arch', VARIANTS)
def test_deploy_form_matches_train_form_at_every_stage(arch):
    """Exact in float64 (rounding only); in float32 within float32 rounding."""
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        backbone = RepVGG(arch, out_indices=(0, 1, 2, 3))
    randomize_batch_norms_(backbone)
    backbone.eval()
    for dtype, bound in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        # float32 first, from a copy; float64 last, in place (no second copy in memory).
        train_form = copy.deepcopy(backbone).to(dtype) if dtype == torch.float32 else backbone
        images = torch.randn(SMALL_IMAGES, dtype=dtype,
                             generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            train_outputs = train_form(images)
            mmrepvgg.repvgg_convert(train_form, inplace=True)
            deploy_outputs = train_form(images)
        assert train_form.deploy and len(deploy_outputs) == 4
        assert max_relative_error(train_outputs, deploy_outputs) <= bound, dtype
        del train_form


@pytest.mark.parametrize('arch', ['A0', 'B1g2', TINY_SE_ARCH], ids=['A0', 'B1g2', 'se'])
def test_deploy_state_dict_loads_into_a_model_built_with_deploy_true(arch):
    train_backbone, deploy_backbone = train_and_deploy_backbones(arch, torch.float32)
    rebuilt = RepVGG(arch, out_indices=(0, 1, 2, 3), deploy=True)
    rebuilt.load_state_dict(deploy_backbone.state_dict(), strict=True)
    rebuilt.eval()
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        assert max_relative_error(train_backbone(images), rebuilt(images)) <= 1e-5


def test_deploy_form_is_a_plain_stack_of_3x3_convs():
    _, deploy_backbone = train_and_deploy_backbones('B1g4', torch.float32)
    blocks = [module for module in deploy_backbone.modules()
              if isinstance(module, RepVGGBlock)]
    assert len(blocks) == 1 + sum(ARCH_SETTINGS['B1g4']['num_blocks'])
    convs = [module for module in deploy_backbone.modules() if isinstance(module, nn.Conv2d)]
    assert len(convs) == len(blocks)
    assert all(conv.kernel_size == (3, 3) and conv.bias is not None for conv in convs)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in deploy_backbone.modules())
    assert sorted({conv.groups for conv in convs}) == [1, 4]
    assert deploy_backbone.deploy and all(block.deploy for block in blocks)


def test_d2se_deploy_form_keeps_the_se_layer_after_the_fused_conv():
    _, deploy_backbone = train_and_deploy_backbones(TINY_SE_ARCH, torch.float64)
    for block in [deploy_backbone.stem, deploy_backbone.stage_4[0]]:
        assert block.se_layer is not None
        features = torch.randn(1, block.in_channels, 8, 8, dtype=torch.float64)
        with torch.no_grad():
            fused = block.branch_reparam(features)
            expected = block.act(fused * torch.sigmoid(block.se_layer.conv2.conv(torch.relu(
                block.se_layer.conv1.conv(fused.mean((2, 3), keepdim=True))))))
            torch.testing.assert_close(block(features), expected)


def test_switch_to_deploy_twice_is_a_no_op_and_converting_a_deployed_model_is_refused():
    _, deploy_backbone = train_and_deploy_backbones('A0', torch.float32)
    state_before = {key: value.clone() for key, value in deploy_backbone.state_dict().items()}
    deploy_backbone.switch_to_deploy()
    assert reparameterize_blocks(deploy_backbone) == 0
    for key, value in deploy_backbone.state_dict().items():
        assert torch.equal(value, state_before[key])
    with pytest.raises(ValueError, match='already deployed'):
        mmrepvgg.repvgg_convert(deploy_backbone)


def test_repvgg_convert_leaves_the_train_model_intact_and_saves_the_deploy_weights(tmp_path):
    train_backbone, _ = train_and_deploy_backbones('A0', torch.float32)
    deploy_path = tmp_path / 'deploy.pth'
    deploy_backbone = mmrepvgg.repvgg_convert(train_backbone, save_path=str(deploy_path))
    assert not train_backbone.deploy and hasattr(train_backbone.stem, 'branch_3x3')
    saved = torch.load(deploy_path, weights_only=True)['state_dict']
    assert saved.keys() == deploy_backbone.state_dict().keys()
    assert 'stage_4.0.branch_reparam.weight' in saved
    with pytest.raises(FileExistsError, match='force'):
        mmrepvgg.repvgg_convert(train_backbone, save_path=str(deploy_path))


def test_a_classifier_converts_as_a_whole():
    classifier = build_classifier('A0', num_classes=10)
    randomize_batch_norms_(classifier)
    classifier.eval()
    deploy_classifier = mmrepvgg.repvgg_convert(classifier)
    assert deploy_classifier.backbone.deploy
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        assert max_relative_error(classifier(images), deploy_classifier(images)) <= 1e-5


@pytest.mark.parametrize('arch', VARIANTS)
def test_mmpretrain_weights_load_without_renaming_and_compute_the_same(arch):
    """mmpretrain 1.2.0's RepVGG is the oracle: its train-form and deploy-form state dicts
    load into ours strictly and compute its function (its deploy D2se drops the SE layers,
    so there ours is compared with its train form only)."""
    torch.manual_seed(0)
    reference = build_reference_classifier(arch, num_classes=10)
    randomize_batch_norms_(reference)
    reference.eval()
    with torch.device('meta'):  # every tensor is loaded next: no initialisation needed
        ours = build_classifier(arch, num_classes=10)
    ours = ours.to_empty(device='cpu').eval()
    ours.load_state_dict(reference.state_dict())
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        reference_logits = reference(images)
        assert max_relative_error(reference_logits, ours(images)) <= 1e-5
        mmrepvgg.repvgg_convert(ours, inplace=True)
        assert max_relative_error(reference_logits, ours(images)) <= 1e-5
        reference.backbone.switch_to_deploy()
        ours.load_state_dict(reference.state_dict())
        if arch != 'D2se':
            assert max_relative_error(reference(images), ours(images)) <= 1e-5


def build_reference_classifier(arch, num_classes):
    """The same classifier with mmpretrain 1.2.0's own RepVGG backbone (a test oracle)."""
    model_cfg = repvgg_classifier_cfg(arch, num_classes=num_classes)
    model_cfg['backbone'] = dict(type='mmpretrain.RepVGG', arch=arch)
    init_default_scope('mmrepvgg')
    return MMPRETRAIN_MODELS.build(model_cfg)


def sgd_losses(classifier, steps=5, seed=0):
    """Losses of ``steps`` SGD steps on one fixed batch of 8 images, 32x32, 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (8, ), generator=generator)
    optimizer = torch.optim.SGD(
        [param for param in classifier.parameters() if param.requires_grad], lr=0.05,
        momentum=0.9)
    classifier.train()
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(classifier(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize('with_cp', [False, True], ids=['plain', 'with_cp'])
def test_a_few_sgd_steps_lower_the_loss(with_cp):
    torch.manual_seed(0)
    classifier = build_classifier('A0', num_classes=10, with_cp=with_cp)
    losses = sgd_losses(classifier)
    assert losses[-1] < 0.5 * losses[0]


def test_activation_checkpointing_gives_the_same_gradients():
    gradients = {}
    for with_cp in (False, True):
        torch.manual_seed(0)
        backbone = RepVGG('A0', with_cp=with_cp).train()
        backbone(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))[0]\
            .square().mean().backward()
        gradients[with_cp] = [param.grad.clone() for param in backbone.parameters()]
    for plain, checkpointed in zip(gradients[False], gradients[True]):
        torch.testing.assert_close(checkpointed, plain)


@pytest.mark.parametrize('block_type', ['repvgg', 'qarepvgg'])
@pytest.mark.parametrize('with_cp', [False, True], ids=['plain', 'with_cp'])
def test_with_cp_runs_the_branches_again_during_backward(with_cp, block_type):
    """Activation checkpointing keeps only the block input and recomputes the branches in
    backward: every branch runs twice with ``with_cp``, once without."""
    torch.manual_seed(0)
    backbone = RepVGG('A0', with_cp=with_cp, block_type=block_type).train()
    calls = []
    for block in backbone.modules():
        if isinstance(block, RepVGGBlock):
            # pre-hooks: torch stops a recomputation as soon as it has every tensor
            # backward needs, i.e. inside the last branch, before its forward hook
            block.branch_3x3.register_forward_pre_hook(lambda *_: calls.append('3x3'))
            block.branch_1x1.register_forward_pre_hook(lambda *_: calls.append('1x1'))
    outputs = backbone(torch.randn(2, 3, 32, 32))[0]
    num_blocks = 1 + sum(ARCH_SETTINGS['A0']['num_blocks'])
    assert len(calls) == 2 * num_blocks
    outputs.square().mean().backward()
    # the stem's input, the images, needs no gradient: nothing of it is recomputed
    recomputed = 2 * (num_blocks - 1) if with_cp else 0
    assert len(calls) == 2 * num_blocks + recomputed


def test_frozen_stages_get_no_gradient_and_keep_their_bn_statistics():
    torch.manual_seed(0)
    backbone = RepVGG('A0', frozen_stages=2).train()
    frozen = [backbone.stem, backbone.stage_1, backbone.stage_2]
    frozen_means = [module.running_mean.clone() for part in frozen
                    for module in part.modules() if isinstance(module, nn.BatchNorm2d)]
    backbone(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert all(param.grad is None and not param.requires_grad
               for part in frozen for param in part.parameters())
    assert all(param.grad is not None for param in backbone.stage_3.parameters())
    means_after = [module.running_mean for part in frozen
                   for module in part.modules() if isinstance(module, nn.BatchNorm2d)]
    assert all(torch.equal(before, after) for before, after in zip(frozen_means, means_after))
    assert backbone.stage_3.training and not backbone.stage_2.training


@pytest.mark.parametrize('norm_eval', [False, True])
def test_norm_eval_keeps_bn_running_statistics_while_training(norm_eval):
    torch.manual_seed(0)
    backbone = RepVGG('A0', norm_eval=norm_eval)
    assert backbone.train() is backbone
    mean_before = backbone.stage_3[0].branch_3x3.norm.running_mean.clone()
    backbone(torch.randn(2, 3, 32, 32))
    unchanged = torch.equal(mean_before, backbone.stage_3[0].branch_3x3.norm.running_mean)
    assert unchanged == norm_eval


def test_training_a_model_built_with_deploy_true_warns():
    backbone = RepVGG('A0', deploy=True)
    with pytest.warns(UserWarning, match='deploy=True'):
        backbone.train()


def test_a_custom_arch_dict_in_mmpretrain_layout_builds():
    arch = dict(num_blocks=[1, 1, 1, 1], width_factor=[0.25, 0.25, 0.25, 0.5],
                group_layer_map={2: 2}, se_cfg=None, stem_channels=8)
    backbone = RepVGG(arch, out_indices=(0, 1, 2, 3)).eval()
    widths = [output.shape[1] for output in backbone(torch.randn(1, 3, 32, 32))]
    assert widths == [16, 32, 64, 256]
    assert backbone.stem.out_channels == 8 and backbone.stage_2[0].groups == 2


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(arch='A9'), RepVGGArgumentError, 'unknown RepVGG arch'),
    (dict(arch=dict(num_blocks=[1, 1, 1, 1], width_factor=[1, 1, 1, 1], depth=3)),
     RepVGGArgumentError, 'unknown RepVGG arch keys'),
    (dict(arch=dict(num_blocks=[1, 1, 1, 1])), KeyError, 'lacks'),
    (dict(arch=dict(num_blocks=[1, 1, 1, 1], width_factor=[1, 1, 1])),
     RepVGGArgumentError, 'one entry per stage'),
    (dict(arch=dict(num_blocks=[1, 1, 1, 1], width_factor=[1, 1, 1, 1],
                    group_layer_map={5: 2})), RepVGGArgumentError, 'names block 5'),
    (dict(arch='A0', out_indices=(4, )), RepVGGArgumentError, 'out_indices'),
    (dict(arch='A0', strides=(2, 2, 2)), RepVGGArgumentError, 'strides'),
    (dict(arch='A0', frozen_stages=5), RepVGGArgumentError, 'frozen_stages'),
    (dict(arch=[4, 6, 16, 1]), TypeError, 'variant name or a dict'),
])
def test_bad_arguments_are_refused_with_a_message(kwargs, error, message):
    with pytest.raises(error, match=message):
        RepVGG(**kwargs)

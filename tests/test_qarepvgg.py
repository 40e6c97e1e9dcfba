"""Specification of the QARepVGG block variant (Chu et al., AAAI 2024): the paper's block
while training, exactly RepVGG's plain 3x3 conv once deployed."""
import glob
import os

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

import mmrepvgg
from mmrepvgg.apis import convert_checkpoint
from mmrepvgg.checkpoint import CheckpointError
from mmrepvgg.checkpoint._layouts import to_project_layout
from mmrepvgg.models import (ARCH_SETTINGS, QARepVGGBlock, RepVGG, RepVGGArgumentError,
                             RepVGGBlock, build_model, reparameterize_blocks,
                             repvgg_classifier_cfg)
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_

from conftest import REPO_ROOT
from published_figures import PUBLISHED

CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')

SMALL_IMAGES = (2, 3, 32, 32)


def float64_qarepvgg(arch, **kwargs):
    torch.manual_seed(0)
    backbone = RepVGG(arch, block_type='qarepvgg', **kwargs).to(torch.float64)
    return randomize_batch_norms_(backbone).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


# The variants differ in depth, width, groups and SE only; these three have each kind of
# block (plain, grouped, SE): every variant's assembly is tests/test_repvgg.py's.
@pytest.mark.parametrize('arch', ['A0', 'B1g2', 'D2se'])
def test_qarepvgg_deploy_matches_train_within_1e_10_in_float64(arch):
    backbone = float64_qarepvgg(arch, out_indices=(0, 1, 2, 3))
    images = torch.randn(SMALL_IMAGES, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        train_outputs = backbone(images)
        num_fused = reparameterize_blocks(backbone)
        deploy_outputs = backbone(images)
    assert num_fused == 1 + sum(ARCH_SETTINGS[arch]['num_blocks'])
    assert max_relative_error(train_outputs, deploy_outputs) <= 1e-10


def test_qarepvgg_block_normalises_only_the_3x3_branch_and_the_sum():
    block = QARepVGGBlock(8, 8)
    assert isinstance(block.branch_3x3.norm, nn.BatchNorm2d)
    assert not hasattr(block.branch_1x1, 'norm') and not hasattr(block, 'branch_norm')
    assert isinstance(block.post_norm, nn.BatchNorm2d)
    assert sorted(key for key in block.state_dict() if not key.startswith('branch_3x3')) \
        == ['branch_1x1.conv.weight', 'post_norm.bias', 'post_norm.num_batches_tracked',
            'post_norm.running_mean', 'post_norm.running_var', 'post_norm.weight']


@pytest.mark.parametrize('in_channels,out_channels,stride,groups', [
    (8, 8, 1, 1), (8, 8, 1, 4), (8, 8, 2, 2), (4, 8, 1, 2)])
def test_qarepvgg_block_computes_the_papers_formula(in_channels, out_channels, stride,
                                                    groups):
    """relu(BN_post(BN_3x3(conv3x3(x)) + conv1x1(x) + x)), the identity only where the
    shapes allow it, written here with torch's functional ops."""
    torch.manual_seed(0)
    block = randomize_batch_norms_(
        QARepVGGBlock(in_channels, out_channels, stride=stride, groups=groups)
        .to(torch.float64)).eval()
    images = torch.randn(2, in_channels, 9, 9, dtype=torch.float64)

    def bn(features, norm):
        return F.batch_norm(features, norm.running_mean, norm.running_var, norm.weight,
                            norm.bias, training=False, eps=norm.eps)

    summed = (bn(F.conv2d(images, block.branch_3x3.conv.weight, None, stride, 1, 1, groups),
                 block.branch_3x3.norm)
              + F.conv2d(images, block.branch_1x1.conv.weight, None, stride, 0, 1, groups))
    if in_channels == out_channels and stride == 1:
        summed = summed + images
    expected = torch.relu(bn(summed, block.post_norm))
    with torch.no_grad():
        torch.testing.assert_close(block(images), expected, rtol=1e-12, atol=1e-12)
        block.switch_to_deploy()
        torch.testing.assert_close(block(images), expected, rtol=1e-10, atol=1e-10)


def test_qarepvgg_deploy_form_is_repvggs_and_loads_into_a_plain_repvgg():
    grouped = dict(num_blocks=(1, 2, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.5),
                   group_layer_map={2: 4, 3: 4})  # B1g4's kind of blocks, narrow
    backbone = float64_qarepvgg(grouped)
    deploy_backbone = mmrepvgg.repvgg_convert(backbone)
    assert not any(isinstance(module, nn.BatchNorm2d)
                   for module in deploy_backbone.modules())
    plain = RepVGG(grouped, deploy=True).to(torch.float64).eval()
    plain.load_state_dict(deploy_backbone.state_dict(), strict=True)
    assert plain.state_dict().keys() == deploy_backbone.state_dict().keys()
    images = torch.randn(SMALL_IMAGES, dtype=torch.float64)
    with torch.no_grad():
        assert max_relative_error(backbone(images), plain(images)) <= 1e-10


@pytest.mark.parametrize('arch', ['A0', 'B1g2', 'D2se'])
def test_qarepvgg_parameter_counts_in_both_forms(arch):
    """Deploy: RepVGG's published deploy count. Train: per block the 3x3 kernel, its BN
    (2 C_out), the 1x1 kernel and the post-sum BN (2 C_out), where the deploy form has the
    3x3 kernel and a bias (C_out)."""
    with torch.device('meta'):  # counts only
        qarepvgg = build_model(repvgg_classifier_cfg(arch, block_type='qarepvgg'))
        deploy = mmrepvgg.repvgg_convert(qarepvgg)
    assert count_parameters(deploy) / 1e6 == pytest.approx(PUBLISHED[arch].params_m_deploy,
                                                           abs=0.005 + 1e-9)
    train_extra = sum(block.branch_1x1.conv.weight.numel() + 3 * block.out_channels
                      for block in qarepvgg.modules() if isinstance(block, RepVGGBlock))
    assert count_parameters(qarepvgg) == count_parameters(deploy) + train_extra


def test_a_few_sgd_steps_lower_the_loss_of_a_qarepvgg_classifier():
    # lr 0.01: at 0.05 this 8-image batch stalls near ln 4 within 8 steps (measured).
    torch.manual_seed(0)
    classifier = build_model(repvgg_classifier_cfg('A0', num_classes=10,
                                                   block_type='qarepvgg'))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (8, ), generator=generator)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.9)
    classifier.train()
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(classifier(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_an_unknown_block_type_is_refused_with_the_choices():
    with pytest.raises(RepVGGArgumentError, match="'repvgg', 'qarepvgg'|repvgg, qarepvgg"):
        RepVGG('A0', block_type='qa')


QAREPVGG_CONFIGS = sorted(
    os.path.relpath(path, CONFIG_DIR) for path in
    glob.glob(os.path.join(CONFIG_DIR, 'qarepvgg', '*.py'))
    + [os.path.join(CONFIG_DIR, 'digits', 'qarepvgg-A0_digits.py')])


@pytest.mark.parametrize('name', QAREPVGG_CONFIGS)
def test_qarepvgg_config_is_its_repvgg_config_with_the_qarepvgg_block(name):
    folder, file_name = os.path.split(name)
    repvgg_name = os.path.join('' if folder == 'qarepvgg' else folder,
                               file_name[len('qa'):])
    qarepvgg_cfg = Config.fromfile(os.path.join(CONFIG_DIR, name))
    repvgg_cfg = Config.fromfile(os.path.join(CONFIG_DIR, repvgg_name))
    assert qarepvgg_cfg.model.backbone.pop('block_type') == 'qarepvgg'
    if folder == 'digits':  # measured: QARepVGG diverges at RepVGG's lr 0.05 there
        assert qarepvgg_cfg.optim_wrapper.optimizer.lr == 0.01
        qarepvgg_cfg.optim_wrapper.optimizer.lr = repvgg_cfg.optim_wrapper.optimizer.lr
    assert qarepvgg_cfg.to_dict() == repvgg_cfg.to_dict()


def test_qarepvgg_digits_config_builds_qarepvgg_blocks_only():
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, 'digits', 'qarepvgg-A0_digits.py'))
    blocks = [module for module in build_model(cfg.model).modules()
              if isinstance(module, RepVGGBlock)]
    assert len(blocks) == 22 and all(type(block) is QARepVGGBlock for block in blocks)


def test_a_qarepvgg_checkpoint_converts_to_one_the_deploy_config_loads(tmp_path):
    train_cfg = os.path.join(CONFIG_DIR, 'digits', 'qarepvgg-A0_digits.py')
    deploy_cfg = os.path.join(CONFIG_DIR, 'digits', 'deploy', 'qarepvgg-A0_deploy_digits.py')
    torch.manual_seed(0)
    train_model = randomize_batch_norms_(build_model(Config.fromfile(train_cfg).model))
    state = to_project_layout(train_model.state_dict())
    assert 'stage_1.1.post_norm.running_var' in state.backbone and state.form == 'train'
    torch.save({'state_dict': train_model.state_dict()}, tmp_path / 'train.pth')
    report = convert_checkpoint(train_cfg, str(tmp_path / 'train.pth'),
                                str(tmp_path / 'deploy.pth'))
    assert (report.src_form, report.num_fused_blocks, report.arch) == \
        ('train', 22, 'QARepVGG-A0')
    deploy_model = build_model(Config.fromfile(deploy_cfg).model)
    deploy_model.load_state_dict(torch.load(tmp_path / 'deploy.pth')['state_dict'],
                                 strict=True)
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        assert max_relative_error(train_model(images), deploy_model(images)) <= 1e-5


def test_qarepvgg_weights_in_a_repvgg_config_are_named_as_such(tmp_path):
    qa_cfg = os.path.join(CONFIG_DIR, 'digits', 'qarepvgg-A0_digits.py')
    repvgg_cfg = os.path.join(CONFIG_DIR, 'digits', 'repvgg-A0_digits.py')
    torch.save({'state_dict': build_model(Config.fromfile(qa_cfg).model).state_dict()},
               tmp_path / 'qa.pth')
    with pytest.raises(CheckpointError, match='holds QARepVGG-A0 weights but the config '
                       'builds RepVGG-A0; use the QARepVGG-A0 config'):
        convert_checkpoint(repvgg_cfg, str(tmp_path / 'qa.pth'), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()

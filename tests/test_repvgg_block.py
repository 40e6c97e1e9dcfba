"""Specification of the blocks: the official differentiable equivalent kernel, norms that
fuse, frozen parameters that stay frozen, and the image channels of a model."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmrepvgg.models import QARepVGGBlock, RepVGG, RepVGGBlock
from mmrepvgg.models.repvgg import image_channels
from lab.synthetic import randomize_batch_norms_

BLOCK_TYPES = [RepVGGBlock, QARepVGGBlock]


def trained_looking_block(block_type, in_channels=4, out_channels=4, groups=1):
    torch.manual_seed(0)
    block = block_type(in_channels, out_channels, groups=groups).double()
    return randomize_batch_norms_(block).eval()


def branch_parameters(block):
    return {name: param for name, param in block.named_parameters()
            if not name.startswith('branch_reparam')}


@pytest.mark.parametrize('block_type', BLOCK_TYPES)
@pytest.mark.parametrize('in_channels,out_channels,groups', [(4, 4, 1), (4, 4, 2), (4, 6, 1)])
def test_get_equivalent_kernel_bias_is_the_block_and_is_differentiable(
        block_type, in_channels, out_channels, groups):
    """The fused conv, run by torch's own conv2d, computes the block's summed branches in
    eval mode, and so has the same gradient with respect to every branch parameter (the
    official custom L2 penalty and QAT train through this kernel)."""
    block = trained_looking_block(block_type, in_channels, out_channels, groups)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, in_channels, 7, 7, generator=generator, dtype=torch.float64)
    weights = torch.randn(2, out_channels, 7, 7, generator=generator, dtype=torch.float64)

    kernel, bias = block.get_equivalent_kernel_bias()
    assert kernel.shape == (out_channels, in_channels // groups, 3, 3)
    fused = F.conv2d(images, kernel, bias, padding=1, groups=groups)
    branches = block._branch_sum(images)
    torch.testing.assert_close(fused, branches, rtol=1e-12, atol=1e-12)

    parameters = branch_parameters(block)
    fused_gradients = torch.autograd.grad((fused * weights).sum(), list(parameters.values()))
    branch_gradients = torch.autograd.grad((branches * weights).sum(),
                                           list(parameters.values()))
    for name, fused_gradient, branch_gradient in zip(parameters, fused_gradients,
                                                     branch_gradients):
        assert fused_gradient.abs().max() > 0, name
        torch.testing.assert_close(fused_gradient, branch_gradient, rtol=1e-10, atol=1e-12,
                                   msg=name)


def test_an_official_style_l2_penalty_on_the_equivalent_kernel_reaches_the_branches():
    block = trained_looking_block(RepVGGBlock)
    kernel, bias = block.get_equivalent_kernel_bias()
    (kernel.square().sum() + bias.square().sum()).backward()
    assert all(param.grad is not None and param.grad.abs().max() > 0
               for param in branch_parameters(block).values())


@pytest.mark.parametrize('block_type', BLOCK_TYPES)
@pytest.mark.parametrize('norm_cfg', [dict(type='GN', num_groups=2), dict(type='LN')])
def test_a_norm_that_cannot_fuse_is_refused_at_build(block_type, norm_cfg):
    with pytest.raises(TypeError, match='BatchNorm norm_cfg'):
        block_type(4, 4, norm_cfg=norm_cfg)
    with pytest.raises(TypeError, match='BatchNorm norm_cfg'):
        RepVGG('A0', norm_cfg=norm_cfg)


def test_sync_batch_norm_is_a_batch_norm_and_builds():
    block = RepVGGBlock(4, 4, norm_cfg=dict(type='SyncBN'))
    assert isinstance(block.branch_3x3.norm, nn.SyncBatchNorm)


@pytest.mark.parametrize('block_type', ['repvgg', 'qarepvgg'])
def test_frozen_stages_stay_frozen_after_fusion(block_type):
    backbone = RepVGG('A0', frozen_stages=2, block_type=block_type).switch_to_deploy()
    for stage in (backbone.stem, backbone.stage_1, backbone.stage_2):
        assert not any(param.requires_grad for param in stage.parameters())
    for stage in (backbone.stage_3, backbone.stage_4):
        assert all(param.requires_grad for param in stage.parameters())


class NeckFirst(nn.Module):
    """A model whose RepVGG-block neck is registered before its backbone."""

    def __init__(self):
        super().__init__()
        self.neck = RepVGGBlock(1280, 64)
        self.backbone = RepVGG('A0', in_channels=1)


def test_image_channels_are_the_backbone_stems_whatever_the_module_order():
    assert image_channels(NeckFirst()) == 1
    assert image_channels(RepVGG('A0')) == 3
    with pytest.raises(ValueError, match='no RepVGG backbone'):
        image_channels(RepVGGBlock(3, 8))

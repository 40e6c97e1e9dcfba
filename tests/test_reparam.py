"""The fusion math of mmrepvgg.reparam, checked against convolutions run by torch."""
import pytest
import torch
import torch.nn.functional as F

from mmrepvgg.reparam import (BatchNormStats, fuse_conv_bn, fuse_qarepvgg_branches,
                              fuse_repvgg_branches, identity_kernel_1x1)

DTYPE = torch.float64


def random_bn(channels, generator, affine=True, eps=1e-5):
    def uniform(low, high):
        return torch.empty(channels, dtype=DTYPE).uniform_(low, high, generator=generator)
    return BatchNormStats(
        running_mean=torch.randn(channels, generator=generator, dtype=DTYPE),
        running_var=uniform(0.1, 3.0),
        weight=uniform(0.5, 1.5) if affine else None,
        bias=torch.randn(channels, generator=generator, dtype=DTYPE) if affine else None,
        eps=eps)


def apply_bn(features, bn):
    return F.batch_norm(features, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        training=False, eps=bn.eps)


@pytest.mark.parametrize('affine', [True, False])
@pytest.mark.parametrize('kernel_size', [1, 3])
def test_fused_conv_bn_equals_conv_then_bn(kernel_size, affine):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 4, 7, 7, generator=generator, dtype=DTYPE)
    kernel = torch.randn(6, 4, kernel_size, kernel_size, generator=generator, dtype=DTYPE)
    bn = random_bn(6, generator, affine=affine)
    padding = kernel_size // 2
    expected = apply_bn(F.conv2d(images, kernel, padding=padding), bn)
    fused_kernel, fused_bias = fuse_conv_bn(kernel, bn)
    torch.testing.assert_close(F.conv2d(images, fused_kernel, fused_bias, padding=padding),
                               expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('channels,groups', [(6, 1), (6, 2), (6, 3), (8, 4), (5, 5)])
def test_identity_kernel_reproduces_the_input_for_any_groups(channels, groups):
    images = torch.randn(2, channels, 6, 6, dtype=DTYPE)
    kernel = identity_kernel_1x1(channels, groups, dtype=DTYPE)
    assert kernel.shape == (channels, channels // groups, 1, 1)
    torch.testing.assert_close(F.conv2d(images, kernel, groups=groups), images,
                               rtol=0, atol=0)


def test_identity_kernel_rejects_uneven_groups():
    with pytest.raises(ValueError, match='groups'):
        identity_kernel_1x1(6, 4)


def random_images_and_kernels(channels, groups, generator):
    """Images ``(2, channels, 9, 9)`` and 3x3 and 1x1 kernels of a grouped conv."""
    images = torch.randn(2, channels, 9, 9, generator=generator, dtype=DTYPE)
    kernels = [torch.randn(channels, channels // groups, size, size, generator=generator,
                           dtype=DTYPE) for size in (3, 1)]
    return images, *kernels


def repvgg_branch_sum(images, kernel_3x3, bn_3x3, kernel_1x1, bn_1x1, bn_identity,
                      groups=1, stride=1, dilation=1):
    """The train-form block before SE and activation, branch by branch with torch's ops."""
    branch_sum = (
        apply_bn(F.conv2d(images, kernel_3x3, None, stride, dilation, dilation, groups),
                 bn_3x3)
        + apply_bn(F.conv2d(images, kernel_1x1, None, stride, 0, 1, groups), bn_1x1))
    if bn_identity is not None:
        branch_sum = branch_sum + apply_bn(images, bn_identity)
    return branch_sum


@pytest.mark.parametrize('with_identity', [True, False])
@pytest.mark.parametrize('groups', [1, 2, 4])
@pytest.mark.parametrize('stride,dilation', [(1, 1), (2, 1), (1, 2)])
def test_fused_branches_equal_the_sum_of_the_three_branches(with_identity, groups, stride,
                                                            dilation):
    generator = torch.Generator().manual_seed(1)
    channels = 8
    images, kernel_3x3, kernel_1x1 = random_images_and_kernels(channels, groups, generator)
    bn_3x3, bn_1x1, bn_identity = (random_bn(channels, generator) for _ in range(3))
    use_identity = with_identity and stride == 1
    branch_sum = repvgg_branch_sum(images, kernel_3x3, bn_3x3, kernel_1x1, bn_1x1,
                                   bn_identity if use_identity else None, groups, stride,
                                   dilation)
    kernel, bias = fuse_repvgg_branches(kernel_3x3, bn_3x3, kernel_1x1, bn_1x1,
                                        bn_identity if use_identity else None, groups)
    fused = F.conv2d(images, kernel, bias, stride, dilation, dilation, groups)
    torch.testing.assert_close(fused, branch_sum, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('with_identity', [True, False])
@pytest.mark.parametrize('groups', [1, 2, 4])
@pytest.mark.parametrize('stride,dilation', [(1, 1), (2, 1), (1, 2)])
def test_qarepvgg_fusion_equals_post_norm_of_the_unnormalised_sum(with_identity, groups,
                                                                  stride, dilation):
    generator = torch.Generator().manual_seed(3)
    channels = 8
    images, kernel_3x3, kernel_1x1 = random_images_and_kernels(channels, groups, generator)
    bn_3x3, bn_post = random_bn(channels, generator), random_bn(channels, generator)
    use_identity = with_identity and stride == 1
    branch_sum = (
        apply_bn(F.conv2d(images, kernel_3x3, None, stride, dilation, dilation, groups),
                 bn_3x3)
        + F.conv2d(images, kernel_1x1, None, stride, 0, 1, groups))
    if use_identity:
        branch_sum = branch_sum + images
    kernel, bias = fuse_qarepvgg_branches(kernel_3x3, bn_3x3, kernel_1x1, use_identity,
                                          bn_post, groups)
    fused = F.conv2d(images, kernel, bias, stride, dilation, dilation, groups)
    torch.testing.assert_close(fused, apply_bn(branch_sum, bn_post), rtol=1e-12,
                               atol=1e-12)


def test_qarepvgg_fusion_leaves_its_inputs_unchanged():
    generator = torch.Generator().manual_seed(4)
    kernel_3x3 = torch.randn(4, 4, 3, 3, generator=generator, dtype=DTYPE)
    kernel_1x1 = torch.randn(4, 4, 1, 1, generator=generator, dtype=DTYPE)
    copies = kernel_3x3.clone(), kernel_1x1.clone()
    fuse_qarepvgg_branches(kernel_3x3, random_bn(4, generator), kernel_1x1, True,
                           random_bn(4, generator))
    assert torch.equal(kernel_3x3, copies[0]) and torch.equal(kernel_1x1, copies[1])


def bn_as(bn, dtype):
    return bn._replace(**{name: getattr(bn, name).to(dtype)
                          for name in ('running_mean', 'running_var', 'weight', 'bias')})


def impulse_response(block_function, channels, groups):
    """The 3x3 kernel ``(C, C // groups, 3, 3)`` and bias ``(C,)`` of a function that is a
    3x3 convolution (padding 1), read off its outputs for a zero image and for a unit
    impulse at the centre of each input channel: an output pixel ``(i, j)`` sees the
    impulse through tap ``(2 - i, 2 - j)``."""
    bias = block_function(torch.zeros(1, channels, 3, 3, dtype=DTYPE))[0, :, 1, 1]
    impulses = torch.zeros(channels, channels, 3, 3, dtype=DTYPE)
    impulses[range(channels), range(channels), 1, 1] = 1
    responses = block_function(impulses) - bias.reshape(1, -1, 1, 1)
    full_kernel = responses.permute(1, 0, 2, 3).flip(2, 3)  # (C_out, C_in, 3, 3)
    per_group = channels // groups
    first_input = (torch.arange(channels) // per_group * per_group).reshape(-1, 1)
    own_inputs = first_input + torch.arange(per_group)  # (C_out, C_in // groups)
    return full_kernel[torch.arange(channels).reshape(-1, 1), own_inputs], bias


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_fusion_in_low_precision_rounds_the_exact_kernel_at_most_twice(dtype):
    """The reference is the float64 impulse response of the three branches run by torch,
    with exactly the low-precision weights: only the fusion's own roundings remain."""
    generator = torch.Generator().manual_seed(2)
    channels, groups = 8, 2
    kernel_3x3, kernel_1x1 = (
        torch.randn(channels, channels // groups, size, size, generator=generator,
                    dtype=DTYPE).to(dtype) for size in (3, 1))
    bns = [bn_as(random_bn(channels, generator), dtype) for _ in range(3)]
    kernel, bias = fuse_repvgg_branches(kernel_3x3, bns[0], kernel_1x1, bns[1], bns[2],
                                        groups)
    exact_kernel, exact_bias = impulse_response(
        lambda images: repvgg_branch_sum(
            images, kernel_3x3.to(DTYPE), bn_as(bns[0], DTYPE), kernel_1x1.to(DTYPE),
            bn_as(bns[1], DTYPE), bn_as(bns[2], DTYPE), groups),
        channels, groups)
    assert kernel.dtype == bias.dtype == dtype
    # off-centre taps: the float32 scale and the product are each rounded once
    two_roundings = torch.finfo(dtype).eps
    torch.testing.assert_close(kernel.to(DTYPE), exact_kernel, rtol=two_roundings, atol=0)
    # the centre taps and the bias gather three branches yet are rounded only once
    torch.testing.assert_close(kernel[:, :, 1, 1], exact_kernel[:, :, 1, 1].to(dtype),
                               rtol=0, atol=0)
    torch.testing.assert_close(bias, exact_bias.to(dtype), rtol=0, atol=0)

"""Structural re-parameterization: the pure math of RepVGG (Ding et al., 2021, Sec. 3.3).

A train-form block computes ``BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)``. In eval mode each
BN is the affine map ``gamma * (y - mean) / sqrt(var + eps) + beta`` (Eq. 3 of the paper), so
every branch is a convolution followed by a per-channel scale and shift. Scaling a
convolution's output equals scaling its kernel; a 1x1 kernel is a 3x3 kernel that is zero
off-centre (the 1x1 branch, padding 0, reads the pixel the 3x3 branch, padding
``dilation``, reads at its centre tap); the identity is a 1x1 kernel with a single one per
output channel. Hence the three branches sum to one 3x3 convolution with a bias (Eq. 4).
The QARepVGG block (BN only on the 3x3 branch, one BN after the sum) fuses the same way,
with the post-sum BN folded in last (:func:`fuse_qarepvgg_branches`).

Every function here takes and returns tensors only: no module state, no in-place updates
of its inputs. Kernels have shape ``(C_out, C_in // groups, k, k)``; biases and BN
statistics ``(C_out,)``.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

KernelBias = Tuple[Tensor, Tensor]


class BatchNormStats(NamedTuple):
    """The tensors of an eval-mode BatchNorm, each ``(C,)``.

    ``weight`` (gamma) and ``bias`` (beta) are ``None`` for ``affine=False``.
    """
    running_mean: Tensor
    running_var: Tensor
    weight: Optional[Tensor]
    bias: Optional[Tensor]
    eps: float


def batch_norm_affine(bn: BatchNormStats) -> KernelBias:
    """The eval-mode BatchNorm as the per-channel affine map ``y = x * scale + shift``.

    Returns:
        ``(scale, shift)``, each ``(C,)`` float64: ``scale = gamma / sqrt(running_var +
        eps)``, ``shift = beta - running_mean * scale`` (gamma 1 and beta 0 for
        ``affine=False``). Computed in float64 so that callers round once.
    """
    exact = torch.float64
    scale = torch.rsqrt(bn.running_var.to(exact) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(exact)
    shift = -bn.running_mean.to(exact) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(exact)
    return scale, shift


def scale_kernel(kernel: Tensor, scale: Tensor) -> Tensor:
    """``kernel * scale`` per output channel, in the dtype of ``kernel``.

    Args:
        kernel: ``(C_out, C_in // groups, k, k)``.
        scale: ``(C_out,)``, any floating dtype (float64 from :func:`batch_norm_affine`).

    The product is taken in float32 or wider: exact to float64 precision for float64
    kernels, otherwise within two float32 roundings (of ``scale`` and of the product) plus
    the final one to a narrower dtype. float64 products would triple the memory traffic of
    converting a large model for a gain far below the rounding of a float32 convolution.
    """
    product_dtype = torch.promote_types(kernel.dtype, torch.float32)
    scaled = kernel.to(product_dtype) * scale.to(product_dtype).reshape(-1, 1, 1, 1)
    return scaled.to(kernel.dtype)


def fuse_conv_bn(kernel: Tensor, bn: BatchNormStats) -> KernelBias:
    """Fold an eval-mode BatchNorm into the bias-free convolution that precedes it.

    Args:
        kernel: conv weight, ``(C_out, C_in // groups, k, k)``.
        bn: the BN that follows the conv, over ``C_out`` channels.

    Returns:
        ``(kernel * scale, shift)`` with ``(scale, shift)`` from :func:`batch_norm_affine`:
        a new kernel of the shape, dtype and device of ``kernel`` (rounded as
        :func:`scale_kernel` says), and a ``(C_out,)`` bias of its dtype, rounded once.
    """
    scale, shift = batch_norm_affine(bn)
    return scale_kernel(kernel, scale), shift.to(kernel.dtype)


def identity_kernel_1x1(channels: int,
                        groups: int = 1,
                        dtype: torch.dtype = torch.float32,
                        device: Optional[torch.device] = None) -> Tensor:
    """The 1x1 (grouped) convolution kernel that computes ``y = x``.

    Output channel ``c`` belongs to group ``c // (channels // groups)``, whose inputs are
    numbered locally ``0 .. channels // groups - 1``; its own input is local channel
    ``c % (channels // groups)``, where the kernel holds its single one.

    Returns:
        Tensor ``(channels, channels // groups, 1, 1)``.
    """
    if channels % groups:
        raise ValueError(f'{channels} channels cannot be split into {groups} groups')
    kernel = torch.zeros(channels, channels // groups, 1, 1, dtype=dtype, device=device)
    out_channel = torch.arange(channels, device=device)
    kernel[out_channel, out_channel % (channels // groups), 0, 0] = 1
    return kernel


def fuse_repvgg_branches(kernel_3x3: Tensor,
                         bn_3x3: BatchNormStats,
                         kernel_1x1: Optional[Tensor],
                         bn_1x1: Optional[BatchNormStats],
                         bn_identity: Optional[BatchNormStats],
                         groups: int = 1) -> KernelBias:
    """The single 3x3 conv (kernel, bias) equal to a RepVGG block's summed branches.

    Args:
        kernel_3x3: ``(C_out, C_in // groups, 3, 3)``, followed by ``bn_3x3``.
        kernel_1x1: ``(C_out, C_in // groups, 1, 1)`` followed by ``bn_1x1``, or ``None``.
        bn_identity: the identity branch's BN (needs ``C_in == C_out``, stride 1), or
            ``None`` where the block has none.
        groups: the convolutions' group count.

    Returns:
        ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))``: new tensors in the dtype
        and on the device of ``kernel_3x3``.

    The 1x1 and identity branches touch only the centre taps ``[:, :, 1, 1]``, so they are
    added there rather than padded to full 3x3 kernels: the fusion reads and writes the
    large 3x3 kernel once. The centre taps and the bias sum all branches in float64 and
    are rounded once; the other taps are one product each (see :func:`fuse_conv_bn`).
    """
    exact = torch.float64
    kernel, _ = fuse_conv_bn(kernel_3x3, bn_3x3)
    centre_taps, bias = fuse_conv_bn(kernel_3x3[:, :, 1:2, 1:2].to(exact), bn_3x3)
    if kernel_1x1 is not None:
        centre_taps_1x1, bias_1x1 = fuse_conv_bn(kernel_1x1.to(exact), bn_1x1)
        centre_taps, bias = centre_taps + centre_taps_1x1, bias + bias_1x1
    if bn_identity is not None:
        identity = identity_kernel_1x1(kernel.shape[0], groups, exact, kernel.device)
        centre_taps_identity, bias_identity = fuse_conv_bn(identity, bn_identity)
        centre_taps, bias = centre_taps + centre_taps_identity, bias + bias_identity
    kernel[:, :, 1:2, 1:2] = centre_taps
    return kernel, bias.to(kernel.dtype)


def fuse_qarepvgg_branches(kernel_3x3: Tensor,
                           bn_3x3: BatchNormStats,
                           kernel_1x1: Tensor,
                           with_identity: bool,
                           bn_post: BatchNormStats,
                           groups: int = 1) -> KernelBias:
    """The single 3x3 conv (kernel, bias) equal to a QARepVGG block before its activation.

    A QARepVGG block (Chu et al., "Make RepVGG Greater Again", AAAI 2024) computes
    ``bn_post(bn_3x3(conv3x3(x)) + conv1x1(x) + x)``: the 1x1 and identity branches carry
    no BN of their own, which keeps their weights out of the fused kernel's outliers. The
    sum is one 3x3 conv whose centre taps gain the 1x1 kernel and the identity unscaled;
    ``bn_post`` is then an affine map ``(scale, shift)`` per output channel that folds in
    as ``(kernel * scale, bias * scale + shift)``.

    Args:
        kernel_3x3: ``(C_out, C_in // groups, 3, 3)``, followed by ``bn_3x3``.
        kernel_1x1: ``(C_out, C_in // groups, 1, 1)``, no BN.
        with_identity: whether the block adds its input (needs ``C_in == C_out``,
            stride 1).
        bn_post: the BN over the summed branches, ``C_out`` channels.
        groups: the convolutions' group count.

    Returns:
        ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))``: new tensors in the dtype
        and on the device of ``kernel_3x3``. As in :func:`fuse_repvgg_branches`, each
        off-centre tap is one product (with the two BN scales multiplied in float64
        first) and the centre taps and the bias are summed in float64 and rounded once.
    """
    exact = torch.float64
    scale_3x3, shift_3x3 = batch_norm_affine(bn_3x3)
    scale_post, shift_post = batch_norm_affine(bn_post)
    kernel = scale_kernel(kernel_3x3, scale_3x3 * scale_post)
    centre_taps = (scale_kernel(kernel_3x3[:, :, 1:2, 1:2].to(exact), scale_3x3)
                   + kernel_1x1.to(exact))
    if with_identity:
        centre_taps = centre_taps + identity_kernel_1x1(kernel.shape[0], groups, exact,
                                                        kernel.device)
    kernel[:, :, 1:2, 1:2] = scale_kernel(centre_taps, scale_post)
    bias = shift_3x3 * scale_post + shift_post
    return kernel, bias.to(kernel.dtype)

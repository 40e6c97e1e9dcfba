"""Structural re-parameterization: the pure math of RepVGG (Ding et al., 2021, Sec. 3.3).

A train-form block computes ``BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x)``. In eval mode each
BN is the affine map ``gamma * (y - mean) / sqrt(var + eps) + beta`` (Eq. 3 of the paper), so
every branch is a convolution followed by a per-channel scale and shift. Scaling a
convolution's output equals scaling its kernel, a 1x1 kernel is a 3x3 kernel that is zero
off-centre, and the identity is a 3x3 kernel with a single one per output channel; hence
the three branches sum to one 3x3 convolution with a bias (Eq. 4).

Every function here takes and returns tensors only: no module state, no in-place updates.
Kernels have shape ``(C_out, C_in // groups, k, k)``; biases and BN statistics ``(C_out,)``.
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
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


def fuse_conv_bn(kernel: Tensor, bn: BatchNormStats) -> KernelBias:
    """Fold an eval-mode BatchNorm into the bias-free convolution that precedes it.

    Args:
        kernel: conv weight, ``(C_out, C_in // groups, k, k)``.
        bn: the BN that follows the conv, over ``C_out`` channels.

    Returns:
        ``(kernel * gamma / std, beta - mean * gamma / std)`` with
        ``std = sqrt(running_var + eps)``, computed in the dtype of ``kernel``.
    """
    scale = torch.rsqrt(bn.running_var.to(kernel.dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(kernel.dtype)
    shift = -bn.running_mean.to(kernel.dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(kernel.dtype)
    return kernel * scale.reshape(-1, 1, 1, 1), shift


def pad_to_3x3(kernel: Tensor) -> Tensor:
    """Centre a ``(C_out, C_in // groups, 1, 1)`` kernel in a zero 3x3 kernel.

    Valid because the 1x1 branch of a block uses padding 0 where the 3x3 branch uses
    padding ``dilation``: both read the same centre pixel. A 3x3 kernel is returned as is.
    """
    if kernel.shape[-2:] == (3, 3):
        return kernel
    if kernel.shape[-2:] != (1, 1):
        raise ValueError(
            f'expected a 1x1 or 3x3 kernel, got spatial size {tuple(kernel.shape[-2:])}')
    return F.pad(kernel, [1, 1, 1, 1])


def identity_kernel_3x3(channels: int,
                        groups: int = 1,
                        dtype: torch.dtype = torch.float32,
                        device: Optional[torch.device] = None) -> Tensor:
    """The 3x3 (grouped) convolution kernel that computes ``y = x``.

    Output channel ``c`` belongs to group ``c // (channels // groups)``, whose inputs are
    numbered locally ``0 .. channels // groups - 1``; its own input is local channel
    ``c % (channels // groups)``.

    Returns:
        Tensor ``(channels, channels // groups, 3, 3)`` with a single 1 per output channel.
    """
    if channels % groups:
        raise ValueError(f'{channels} channels cannot be split into {groups} groups')
    channels_per_group = channels // groups
    kernel = torch.zeros(channels, channels_per_group, 3, 3, dtype=dtype, device=device)
    out_channel = torch.arange(channels, device=device)
    kernel[out_channel, out_channel % channels_per_group, 1, 1] = 1
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
        ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))`` in the dtype of
        ``kernel_3x3``.

    Everything is computed in float64 and rounded once at the end, so the result is the
    correctly rounded exact sum whatever the storage dtype (float16 would otherwise lose
    bits in ``1 / sqrt(var + eps)`` and in each partial sum).
    """
    exact = torch.float64
    kernel, bias = fuse_conv_bn(kernel_3x3.to(exact), bn_3x3)
    if kernel_1x1 is not None:
        kernel_1x1, bias_1x1 = fuse_conv_bn(kernel_1x1.to(exact), bn_1x1)
        kernel = kernel + pad_to_3x3(kernel_1x1)
        bias = bias + bias_1x1
    if bn_identity is not None:
        identity = identity_kernel_3x3(kernel.shape[0], groups, exact, kernel.device)
        kernel_identity, bias_identity = fuse_conv_bn(identity, bn_identity)
        kernel = kernel + kernel_identity
        bias = bias + bias_identity
    return kernel.to(kernel_3x3.dtype), bias.to(kernel_3x3.dtype)

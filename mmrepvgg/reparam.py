"""Structural re-parameterization: the pure math of RepVGG (Ding et al., 2021, Sec. 3.3).

In eval mode a BN is the per-channel affine map ``gamma * (y - mean) / sqrt(var + eps) +
beta`` (Eq. 3), so each branch of a block is a conv with scaled kernel plus a bias; the 1x1
and identity branches are 3x3 kernels that are zero off-centre, so the branches sum to one
3x3 conv (Eq. 4). Functions take and return tensors only and never modify their inputs.
Kernels are ``(C_out, C_in // groups, k, k)``; biases and BN statistics ``(C_out,)``.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

KernelBias = Tuple[Tensor, Tensor]


class BatchNormStats(NamedTuple):
    """An eval-mode BatchNorm, tensors ``(C,)`` (``weight``, ``bias`` None if not affine)."""
    running_mean: Tensor
    running_var: Tensor
    weight: Optional[Tensor]
    bias: Optional[Tensor]
    eps: float


def _batch_norm_affine(bn: BatchNormStats) -> KernelBias:
    """``(scale, shift)``, each ``(C,)`` float64, with ``BN(x) = x * scale + shift``; float64
    so that callers round once."""
    exact = torch.float64
    scale = torch.rsqrt(bn.running_var.to(exact) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(exact)
    shift = -bn.running_mean.to(exact) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(exact)
    return scale, shift


def _scale_kernel(kernel: Tensor, scale: Tensor) -> Tensor:
    """``kernel * scale`` per output channel, in the dtype of ``kernel``."""
    # In float32 or wider: float64 products would triple the memory traffic of converting
    # a large model for a gain far below the rounding of a float32 conv.
    product_dtype = torch.promote_types(kernel.dtype, torch.float32)
    scaled = kernel.to(product_dtype) * scale.to(product_dtype).reshape(-1, 1, 1, 1)
    return scaled.to(kernel.dtype)


def fuse_conv_bn(kernel: Tensor, bn: BatchNormStats) -> KernelBias:
    """Fold an eval-mode BatchNorm into the bias-free conv before it.

    Returns:
        ``(kernel * scale, beta - mean * scale)`` with ``scale = gamma / sqrt(var + eps)``:
        a kernel of the shape, dtype and device of ``kernel`` and a ``(C_out,)`` bias of
        its dtype, computed in float64 and rounded once.
    """
    scale, shift = _batch_norm_affine(bn)
    return _scale_kernel(kernel, scale), shift.to(kernel.dtype)


def identity_kernel_1x1(channels: int,
                        groups: int = 1,
                        dtype: torch.dtype = torch.float32,
                        device: Optional[torch.device] = None) -> Tensor:
    """The 1x1 (grouped) conv kernel ``(channels, channels // groups, 1, 1)`` of ``y = x``:
    output channel ``c`` reads local input ``c % (channels // groups)`` of its group.

    Raises:
        ValueError: ``channels`` is not a multiple of ``groups``.
    """
    if channels % groups:
        raise ValueError(f'{channels} channels cannot be split into {groups} groups')
    eye = torch.eye(channels // groups, dtype=dtype, device=device)
    return eye.repeat(groups, 1).reshape(channels, channels // groups, 1, 1)


def fuse_repvgg_branches(kernel_3x3: Tensor,
                         bn_3x3: BatchNormStats,
                         kernel_1x1: Optional[Tensor],
                         bn_1x1: Optional[BatchNormStats],
                         bn_identity: Optional[BatchNormStats],
                         groups: int = 1) -> KernelBias:
    """The 3x3 conv ``(kernel, bias)`` equal to a RepVGG block's summed branches.

    Args:
        kernel_3x3: ``(C_out, C_in // groups, 3, 3)``, followed by ``bn_3x3``.
        kernel_1x1: ``(C_out, C_in // groups, 1, 1)`` followed by ``bn_1x1``, or ``None``.
        bn_identity: the identity branch's BN (``C_in == C_out``, stride 1), or ``None``.

    Returns:
        ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))``, new tensors in the dtype
        and on the device of ``kernel_3x3``. The 1x1 and identity branches only touch the
        centre taps, which (with the bias) sum all branches in float64, rounded once.
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
    """The 3x3 conv ``(kernel, bias)`` equal to a QARepVGG block (Chu et al., AAAI 2024)
    before its activation: ``bn_post(bn_3x3(conv3x3(x)) + conv1x1(x) + x)``, the identity
    only ``with_identity`` (``C_in == C_out``, stride 1).

    The 1x1 kernel and the identity add to the centre taps unscaled; ``bn_post``'s
    ``(scale, shift)`` then folds in as ``(kernel * scale, bias * scale + shift)``. Shapes
    and rounding as in :func:`fuse_repvgg_branches`.
    """
    exact = torch.float64
    scale_3x3, shift_3x3 = _batch_norm_affine(bn_3x3)
    scale_post, shift_post = _batch_norm_affine(bn_post)
    kernel = _scale_kernel(kernel_3x3, scale_3x3 * scale_post)
    centre_taps = (_scale_kernel(kernel_3x3[:, :, 1:2, 1:2].to(exact), scale_3x3)
                   + kernel_1x1.to(exact))
    if with_identity:
        centre_taps = centre_taps + identity_kernel_1x1(kernel.shape[0], groups, exact,
                                                        kernel.device)
    kernel[:, :, 1:2, 1:2] = _scale_kernel(centre_taps, scale_post)
    bias = shift_3x3 * scale_post + shift_post
    return kernel, bias.to(kernel.dtype)

"""Structural re-parameterization, the pure math of RepVGG (Ding et al., 2021, Eqs. 3-4): an
eval-mode BN folds into the conv before it and the branches add up to one 3x3 conv. Inputs are
never modified; kernels are ``(C_out, C_in // groups, k, k)``, biases ``(C_out,)``."""
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
    """``(scale, shift)``, ``(C,)`` float64 so that callers round once: ``BN(x) = x * scale +
    shift``."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def _scale_kernel(kernel: Tensor, scale: Tensor) -> Tensor:
    """``kernel * scale`` per output channel, in the dtype of ``kernel``."""
    # In float32 or wider: float64 products would triple the memory traffic of converting
    # a large model for a gain far below the rounding of a float32 conv.
    product_dtype = torch.promote_types(kernel.dtype, torch.float32)
    scaled = kernel.to(product_dtype) * scale.to(product_dtype).reshape(-1, 1, 1, 1)
    return scaled.to(kernel.dtype)


def fuse_conv_bn(kernel: Tensor, bn: BatchNormStats) -> KernelBias:
    """Fold an eval-mode BatchNorm into the bias-free conv before it: ``(kernel * scale, beta -
    mean * scale)`` with ``scale = gamma / sqrt(var + eps)``, in the dtype and on the device of
    ``kernel``, computed in float64 and rounded once."""
    scale, shift = _batch_norm_affine(bn)
    return _scale_kernel(kernel, scale), shift.to(kernel.dtype)


def identity_kernel_1x1(channels: int,
                        groups: int = 1,
                        dtype: torch.dtype = torch.float32,
                        device: Optional[torch.device] = None) -> Tensor:
    """The 1x1 (grouped) conv kernel ``(channels, channels // groups, 1, 1)`` of ``y = x``.

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
    """The 3x3 conv ``(kernel (C_out, C_in // groups, 3, 3), bias (C_out,))`` equal to a RepVGG
    block's summed branches: ``kernel_3x3`` then ``bn_3x3``, ``kernel_1x1`` ``(C_out, C_in //
    groups, 1, 1)`` then ``bn_1x1`` (or None), the identity's ``bn_identity`` (or None). New
    tensors in the dtype and on the device of ``kernel_3x3``; the centre taps, where the 1x1
    and identity branches land, and the bias are summed in float64 and rounded once."""
    kernel, _ = fuse_conv_bn(kernel_3x3, bn_3x3)
    branches = [(kernel_3x3[:, :, 1:2, 1:2], bn_3x3)]
    if kernel_1x1 is not None:
        branches.append((kernel_1x1, bn_1x1))
    if bn_identity is not None:
        identity = identity_kernel_1x1(kernel.shape[0], groups, torch.float64, kernel.device)
        branches.append((identity, bn_identity))
    fused = [fuse_conv_bn(taps.double(), bn) for taps, bn in branches]
    kernel[:, :, 1:2, 1:2] = sum(taps for taps, _ in fused)
    return kernel, sum(bias for _, bias in fused).to(kernel.dtype)


def fuse_qarepvgg_branches(kernel_3x3: Tensor,
                           bn_3x3: BatchNormStats,
                           kernel_1x1: Tensor,
                           with_identity: bool,
                           bn_post: BatchNormStats,
                           groups: int = 1) -> KernelBias:
    """The 3x3 conv equal to a QARepVGG block (Chu et al., AAAI 2024) before its activation,
    ``bn_post(bn_3x3(conv3x3(x)) + conv1x1(x) + x)`` (the identity only ``with_identity``):
    the 1x1 kernel and identity add to the centre taps unscaled, then ``bn_post`` folds in.
    Shapes and rounding as in :func:`fuse_repvgg_branches`."""
    scale_3x3, shift_3x3 = _batch_norm_affine(bn_3x3)
    scale_post, shift_post = _batch_norm_affine(bn_post)
    kernel = _scale_kernel(kernel_3x3, scale_3x3 * scale_post)
    centre_taps = _scale_kernel(kernel_3x3[:, :, 1:2, 1:2].double(), scale_3x3)
    centre_taps = centre_taps + kernel_1x1.double()
    if with_identity:
        centre_taps = centre_taps + identity_kernel_1x1(kernel.shape[0], groups,
                                                        torch.float64, kernel.device)
    kernel[:, :, 1:2, 1:2] = _scale_kernel(centre_taps, scale_post)
    return kernel, (shift_3x3 * scale_post + shift_post).to(kernel.dtype)

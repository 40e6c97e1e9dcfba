"""Cross-layer equalization of the deploy form (Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction", ICCV 2019, Sec. 4.1).

A deployed RepVGG is a chain ``conv_1 -> ReLU -> conv_2 -> ReLU -> ...``. ReLU is
positively homogeneous, ``relu(x / s) = relu(x) / s`` for ``s > 0``, so dividing output
channel ``i`` of ``conv_1`` (its kernel row and its bias) by ``s_i`` and multiplying input
channel ``i`` of ``conv_2`` by ``s_i`` leaves the function unchanged (zero padding stays
zero; reflect, replicate and circular padding copy the scaled values). The fused kernels
hold a few large output channels (the identity and 1x1 branches fold into their centre
taps with BN scales), which stretch a per-tensor activation grid and the per-channel
weight grid of the next conv over all its inputs. The paper's choice
``s_i = sqrt(r1_i / r2_i)``, with ``r1_i`` the range of ``conv_1``'s output channel ``i``
and ``r2_i`` that of ``conv_2``'s input channel ``i``, makes both ranges
``sqrt(r1_i * r2_i)``; a conv inside the chain is the second of one pair and the first of
the next, so the pairs are swept a few times (:data:`EQUALIZATION_SWEEPS`).

Ranges are ``max |w|`` (the symmetric weight grid's range). The math is in float64 on a
float64 copy of the model, verified there against the unequalized copy like the fusion
(:data:`mmrepvgg._numerics.VERIFY_TOLERANCE`, as the fusion), and rounded once to the model's dtype.

Pairs are equalized only where nothing but a positively homogeneous activation lies
between the two convs: a block with a squeeze-excitation layer (D2se) is skipped by name,
as is a stage boundary whose output the backbone returns (``out_indices``): that output
would come out scaled.
"""
import copy
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..models import RepVGG, RepVGGBlock, reparameterize_model
from ..models.repvgg import image_channels
from .._numerics import VERIFY_INPUT_SIZE, VERIFY_TOLERANCE, max_relative_output_error

# Sweeps over the chain: each one equalizes every pair once, the later ones settle the
# convs that belong to two pairs.
EQUALIZATION_SWEEPS = 8
# Activations with act(x / s) = act(x) / s for s > 0: a per-channel scale passes through.
POSITIVELY_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity)


class EqualizationError(ValueError):
    """The equalized model does not compute the original function."""


class EqualizationReport(NamedTuple):
    """What :func:`equalize_model` did.

    Attributes:
        equalized: the block pairs rescaled, e.g. ``'backbone.stem -> backbone.stage_1.0'``.
        skipped: the adjacent pairs left alone, each with the reason, e.g.
            ``'backbone.stage_1.0 -> backbone.stage_1.1 (backbone.stage_1.0.se_layer
            between them)'``.
        max_relative_error: ``max |original - equalized| / max |original|`` over the
            outputs for a random batch, both in float64.
    """
    equalized: Tuple[str, ...]
    skipped: Tuple[str, ...]
    max_relative_error: float

    def describe(self) -> str:
        """One line, e.g. ``cross-layer equalization: 20 conv pairs rescaled, 1 skipped
        (...); float64 relative error 3.1e-16``; past three skipped pairs, the first and
        a count."""
        skipped = self.skipped
        if len(skipped) > 3:
            skipped = (skipped[0], f'{len(skipped) - 1} more')
        skipped = f' ({"; ".join(skipped)})' if skipped else ''
        return (f'cross-layer equalization: {len(self.equalized)} conv pairs rescaled, '
                f'{len(self.skipped)} skipped{skipped}; float64 relative error '
                f'{self.max_relative_error:.1e}')


def output_channel_ranges(kernel: Tensor) -> Tensor:
    """``max |w|`` of each output channel of ``kernel`` ``(C_out, C_in // groups, k, k)``:
    a ``(C_out,)`` tensor."""
    return kernel.abs().amax(dim=(1, 2, 3))


def input_channel_ranges(kernel: Tensor, groups: int = 1) -> Tensor:
    """``max |w|`` of each input channel of a conv's ``kernel`` ``(C_out, C_in // groups,
    k, k)``: a ``(C_in,)`` tensor.

    Input channel ``i`` belongs to group ``g = i // (C_in // groups)``, read by output
    channels ``g * C_out // groups`` to ``(g + 1) * C_out // groups - 1`` at local column
    ``i % (C_in // groups)``.
    """
    out_channels, in_per_group = kernel.shape[:2]
    grouped = kernel.abs().reshape(groups, out_channels // groups, in_per_group, -1)
    return grouped.amax(dim=(1, 3)).reshape(groups * in_per_group)


def equalization_scales(output_ranges: Tensor, input_ranges: Tensor) -> Tensor:
    """The paper's ``s_i = sqrt(r1_i / r2_i)``, ``(C,)`` each: the scale that gives both
    ranges ``sqrt(r1_i * r2_i)``. A channel with a zero range on either side keeps ``s_i =
    1`` (a dead channel: there is nothing to balance)."""
    balanced = (output_ranges > 0) & (input_ranges > 0)
    ratio = torch.where(balanced, output_ranges / torch.where(balanced, input_ranges, 1),
                        torch.ones_like(output_ranges))
    return ratio.sqrt()


def rescale_conv_pair(kernel_1: Tensor, bias_1: Tensor, kernel_2: Tensor, groups_2: int,
                      scales: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Divide output channel ``i`` of ``conv_1`` by ``scales[i]`` and multiply input
    channel ``i`` of ``conv_2`` by it: ``conv_2(act(conv_1(x)))`` is unchanged for a
    positively homogeneous ``act`` and positive ``scales``.

    Args:
        kernel_1: ``(C, C_in // groups_1, k, k)``; bias_1: ``(C,)``.
        kernel_2: ``(C_out, C // groups_2, k, k)``.
        groups_2: the group count of ``conv_2``.
        scales: ``(C,)``, positive.

    Returns:
        New ``(kernel_1, bias_1, kernel_2)`` of the input shapes, in the dtype of
        ``scales`` (float64 for the callers here, who round once at the end).
    """
    dtype = scales.dtype
    kernel_1 = kernel_1.to(dtype) / scales.reshape(-1, 1, 1, 1)
    bias_1 = bias_1.to(dtype) / scales
    out_channels, in_per_group = kernel_2.shape[:2]
    grouped = kernel_2.to(dtype).reshape(groups_2, out_channels // groups_2, in_per_group,
                                         *kernel_2.shape[2:])
    grouped = grouped * scales.reshape(groups_2, 1, in_per_group, 1, 1)
    return kernel_1, bias_1, grouped.reshape(kernel_2.shape)


def _chains(model: nn.Module) -> List[Tuple[List[Tuple[str, RepVGGBlock]], set]]:
    """Per RepVGG backbone of ``model``: its blocks in order ``(qualified name, block)``
    and the indices of the blocks whose output the backbone returns mid-chain."""
    names = {module: name for name, module in model.named_modules()}
    chains = []
    for backbone in (module for module in model.modules() if isinstance(module, RepVGG)):
        blocks, tapped = [(names[backbone.stem], backbone.stem)], set()
        for stage_index, stage_name in enumerate(backbone.stages):
            stage = getattr(backbone, stage_name)
            blocks.extend((names[block], block) for block in stage)
            if stage_index in backbone.out_indices:
                tapped.add(len(blocks) - 1)
        chains.append((blocks, tapped))
    return chains


def _skip_reason(first_name: str, first: RepVGGBlock, tapped: bool) -> Optional[str]:
    if first.se_layer is not None:
        return f'{first_name}.se_layer between them'
    if not isinstance(first.act, POSITIVELY_HOMOGENEOUS):
        return f'{first_name}.act is {type(first.act).__name__}, not positively homogeneous'
    if tapped:
        return f'{first_name} is a backbone output (out_indices)'
    return None


@torch.no_grad()
def equalize_chains(model: nn.Module,
                    sweeps: int = EQUALIZATION_SWEEPS) -> Tuple[Tuple[str, ...],
                                                                Tuple[str, ...]]:
    """Equalize every adjacent pair of fused convs in the RepVGG backbones of ``model``
    (deploy form), in place, unverified; :func:`equalize_model` is the checked entry.

    Returns:
        ``(equalized, skipped)`` as in :class:`EqualizationReport`.
    """
    equalized, skipped, pairs = [], [], []
    for blocks, tapped in _chains(model):
        for index, ((first_name, first), (second_name, second)) in enumerate(
                zip(blocks, blocks[1:])):
            pair = f'{first_name} -> {second_name}'
            reason = _skip_reason(first_name, first, index in tapped)
            if reason:
                skipped.append(f'{pair} ({reason})')
            else:
                equalized.append(pair)
                pairs.append((first.branch_reparam, second.branch_reparam))
    for _ in range(sweeps if pairs else 0):
        for conv_1, conv_2 in pairs:
            scales = equalization_scales(output_channel_ranges(conv_1.weight),
                                         input_channel_ranges(conv_2.weight, conv_2.groups))
            kernel_1, bias_1, kernel_2 = rescale_conv_pair(
                conv_1.weight, conv_1.bias, conv_2.weight, conv_2.groups, scales)
            conv_1.weight.copy_(kernel_1)
            conv_1.bias.copy_(bias_1)
            conv_2.weight.copy_(kernel_2)
    return tuple(equalized), tuple(skipped)


def verify_equalization(original: nn.Module, equalized: nn.Module,
                        input_shape: Sequence[int],
                        tolerance: float = VERIFY_TOLERANCE) -> float:
    """The relative output error of ``equalized`` against ``original`` (compare float64
    copies) on a random batch of ``input_shape`` ``(N, C, H, W)``.

    Raises:
        EqualizationError: the error exceeds ``tolerance``: the rescaling changed the
            function.
    """
    error = max_relative_output_error(original, equalized, input_shape)
    if not error <= tolerance:
        raise EqualizationError(
            f'equalized and original outputs differ by {error:.2e} in float64 (relative, '
            f'tolerance {tolerance:.0e}): the equalization is wrong; model left unchanged')
    return error


def equalize_model(model: nn.Module, inplace: bool = False,
                   sweeps: int = EQUALIZATION_SWEEPS,
                   tolerance: float = VERIFY_TOLERANCE,
                   input_shape: Optional[Sequence[int]] = None
                   ) -> Tuple[nn.Module, EqualizationReport]:
    """Cross-layer equalization of ``model``'s deploy form, verified in float64.

    Args:
        model: a classifier, a bare RepVGG backbone or any model holding RepVGG backbones
            (any variant, grouped convs included); train-form blocks are fused first
            (:func:`mmrepvgg.models.reparameterize_model`).
        inplace: equalize ``model`` itself (its blocks fused) instead of a deep copy; it
            is written only after the verification passed.
        sweeps: passes over each chain of conv pairs.
        tolerance: largest accepted float64 relative output error.
        input_shape: ``(N, C, H, W)`` of the verification batch; default two 64x64
            images with the backbone's channels.

    Returns:
        ``(equalized deploy model in eval mode, in model's dtype, report)``.

    Raises:
        EqualizationError: the float64 outputs moved past ``tolerance``.
    """
    deploy_model = reparameterize_model(model, inplace)
    if input_shape is None:
        input_shape = (VERIFY_INPUT_SIZE[0], image_channels(deploy_model),
                       *VERIFY_INPUT_SIZE[1:])
    original_float64 = copy.deepcopy(deploy_model).double()
    equalized_float64 = copy.deepcopy(original_float64)
    equalized, skipped = equalize_chains(equalized_float64, sweeps)
    error = verify_equalization(original_float64, equalized_float64, input_shape, tolerance)
    # load_state_dict copies into the model's own tensors: rounded once, to their dtype.
    deploy_model.load_state_dict(equalized_float64.state_dict())
    return deploy_model, EqualizationReport(equalized, skipped, error)

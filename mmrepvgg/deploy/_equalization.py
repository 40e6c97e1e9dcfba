"""Cross-layer equalization of the deploy form (Nagel et al., ICCV 2019, Sec. 4.1;
docs/int8.md): ``relu(x / s) = relu(x) / s`` lets per-channel ranges move between a conv
and the next one. Computed in float64, verified like the fusion, rounded once."""
import copy
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..models import RepVGG, RepVGGBlock, reparameterize_model
from ..models.repvgg import image_channels
from .._numerics import VERIFY_INPUT_SIZE, VERIFY_TOLERANCE, max_relative_output_error

# Passes over each chain: a conv inside it belongs to two pairs, the later passes settle it.
EQUALIZATION_SWEEPS = 8
# Activations with act(x / s) = act(x) / s for s > 0: a per-channel scale passes through.
POSITIVELY_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity)


class _EqualizationError(ValueError):
    """The equalized model does not compute the original function."""


class _EqualizationReport(NamedTuple):
    """The pairs rescaled and skipped (with the reason), and the float64 relative error."""
    equalized: Tuple[str, ...]
    skipped: Tuple[str, ...]
    max_relative_error: float


def _output_channel_ranges(kernel: Tensor) -> Tensor:
    """``(C_out,)``: ``max |w|`` per output channel."""
    return kernel.abs().amax(dim=(1, 2, 3))


def _input_channel_ranges(kernel: Tensor, groups: int = 1) -> Tensor:
    """``(C_in,)``: ``max |w|`` per input channel of ``kernel`` ``(C_out, C_in // groups,
    k, k)``."""
    out_channels, in_per_group = kernel.shape[:2]
    grouped = kernel.abs().reshape(groups, out_channels // groups, in_per_group, -1)
    return grouped.amax(dim=(1, 3)).reshape(groups * in_per_group)


def equalization_scales(output_ranges: Tensor, input_ranges: Tensor) -> Tensor:
    """The paper's ``s_i = sqrt(r1_i / r2_i)`` (``(C,)`` each, ranges ``max |w|``), which
    gives both ranges ``sqrt(r1_i * r2_i)``; a zero range on either side keeps ``s_i = 1``."""
    balanced = (output_ranges > 0) & (input_ranges > 0)
    ratio = torch.where(balanced, output_ranges / torch.where(balanced, input_ranges, 1),
                        torch.ones_like(output_ranges))
    return ratio.sqrt()


def rescale_conv_pair(kernel_1: Tensor, bias_1: Tensor, kernel_2: Tensor, groups_2: int,
                      scales: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """New ``(kernel_1, bias_1, kernel_2)`` in the dtype of ``scales`` ``(C,)``, which keep
    ``conv_2(relu(conv_1(x)))``: output channel ``i`` of ``conv_1`` (``(C, C_in // groups_1,
    k, k)``, ``(C,)``) divided by ``scales[i] > 0``, input channel ``i`` of ``conv_2``
    (``(C_out, C // groups_2, k, k)``) multiplied by it."""
    dtype = scales.dtype
    kernel_1 = kernel_1.to(dtype) / scales.reshape(-1, 1, 1, 1)
    bias_1 = bias_1.to(dtype) / scales
    out_channels, in_per_group = kernel_2.shape[:2]
    grouped = kernel_2.to(dtype).reshape(groups_2, out_channels // groups_2, in_per_group,
                                         *kernel_2.shape[2:])
    grouped = grouped * scales.reshape(groups_2, 1, in_per_group, 1, 1)
    return kernel_1, bias_1, grouped.reshape(kernel_2.shape)


def _chains(model: nn.Module) -> List[Tuple[List[Tuple[str, RepVGGBlock]], set]]:
    """Per RepVGG backbone: its ``(name, block)`` in order and the indices of the blocks
    whose output it returns (``out_indices``: not rescaled)."""
    names = {module: name for name, module in model.named_modules()}
    chains = []
    for backbone in (module for module in model.modules() if isinstance(module, RepVGG)):
        blocks, tapped = [(names[backbone.stem], backbone.stem)], set()
        for stage_index, stage_name in enumerate(backbone.stages):
            blocks.extend((names[block], block) for block in getattr(backbone, stage_name))
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
def _equalize_chains(model: nn.Module, sweeps: int) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """Equalize the deploy-form ``model`` in place, unverified: ``(equalized, skipped)``."""
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
            scales = equalization_scales(_output_channel_ranges(conv_1.weight),
                                         _input_channel_ranges(conv_2.weight, conv_2.groups))
            kernel_1, bias_1, kernel_2 = rescale_conv_pair(
                conv_1.weight, conv_1.bias, conv_2.weight, conv_2.groups, scales)
            conv_1.weight.copy_(kernel_1)
            conv_1.bias.copy_(bias_1)
            conv_2.weight.copy_(kernel_2)
    return tuple(equalized), tuple(skipped)


def _verify_equalization(original: nn.Module, equalized: nn.Module,
                         input_shape: Sequence[int]) -> float:
    """The relative output error of ``equalized`` against ``original`` on a random batch;
    ``_EqualizationError`` past the fusion's tolerance."""
    error = max_relative_output_error(original, equalized, input_shape)
    if not error <= VERIFY_TOLERANCE:
        raise _EqualizationError(
            f'equalized and original outputs differ by {error:.2e} in float64 (relative, '
            f'tolerance {VERIFY_TOLERANCE:.0e}): the equalization is wrong; model left '
            'unchanged')
    return error


def equalize_model(model: nn.Module, inplace: bool = False
                   ) -> Tuple[nn.Module, _EqualizationReport]:
    """``(equalized deploy model in eval mode, report)``: the deploy form of ``model`` (itself
    with ``inplace``, written once verified in float64; else ``_EqualizationError``)."""
    deploy_model = reparameterize_model(model, inplace)
    input_shape = (VERIFY_INPUT_SIZE[0], image_channels(deploy_model), *VERIFY_INPUT_SIZE[1:])
    original_float64 = copy.deepcopy(deploy_model).double()
    equalized_float64 = copy.deepcopy(original_float64)
    equalized, skipped = _equalize_chains(equalized_float64, EQUALIZATION_SWEEPS)
    error = _verify_equalization(original_float64, equalized_float64, input_shape)
    # load_state_dict copies into the model's own tensors: rounded once, to their dtype.
    deploy_model.load_state_dict(equalized_float64.state_dict())
    return deploy_model, _EqualizationReport(equalized, skipped, error)

"""Learned rounding of the deploy convs' weights to the INT8 grid (AdaRound: Nagel et al.,
"Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020).

Post-training INT8 rounds every weight to the nearest level of its channel's grid
(symmetric, scale ``max |w| / weight_max`` per output channel). Nearest is best weight by
weight, not for a conv's output: a fused RepVGG kernel holds a few large taps (the
identity and 1x1 branches fold into its centre), so its grid is coarse and the rounding
errors of one output add up. AdaRound chooses, for each weight, the level just below or
just above it so that the conv's output on calibration images stays closest to FP32.

Per RepVGG block, first to last: the soft rounding ``floor(w / s) + h(v)`` (``h`` the
rectified sigmoid of :func:`rectified_sigmoid`, ``v`` learned by Adam) is fitted so that
``act(conv(x_q))`` matches the FP32 model's ``act(conv(x))`` in mean square, where ``x_q``
is the block's input in the model whose earlier blocks are already rounded, with every
conv input rounded to uint8 as the runtime will (min-max ranges of the calibration
images; :func:`.fake_quant.fake_quantize`). A penalty (:func:`rounding_penalty`) drives each
``h`` to 0 or 1 as its exponent anneals from 20 to 2; then ``h`` is rounded to 0 or 1.

The result is an FP32 model whose weights lie exactly on the grid the runtime computes
from them: each channel keeps its largest weight, so ONNX Runtime's (and NNCF's) scale is
unchanged and quantizing the file rounds nothing. Only RepVGG blocks' convs are rounded
here; any other layer is left to the runtime's nearest rounding.
"""
import copy
from typing import List, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from ..models import RepVGGBlock, reparameterize_model
from ._host_cpu import INT8_WEIGHT_MAX
from ._fake_quant import FakeQuantizedConv, fake_quantize, kernel_scale

# The stretch of the rectified sigmoid: h reaches exactly 0 and 1 at finite v.
STRETCH_LOW, STRETCH_HIGH = -0.1, 1.1


class RoundingSchedule(NamedTuple):
    """How each conv's rounding is fitted (the paper's settings, fewer iterations).

    Attributes:
        iterations: Adam steps per conv.
        batch_size: calibration images per step.
        learning_rate: Adam's, on ``v``.
        penalty_weight: weight of :func:`rounding_penalty` against the mean squared
            output error.
        warmup: fraction of the iterations without the penalty.
        sharpness: the penalty's exponent, annealed from the first to the second value.
    """
    iterations: int = 500
    batch_size: int = 32
    learning_rate: float = 1e-2
    penalty_weight: float = 0.01
    warmup: float = 0.2
    sharpness: tuple = (20.0, 2.0)


def rectified_sigmoid(logits: Tensor) -> Tensor:
    """``clamp(sigmoid(v) * 1.2 - 0.1, 0, 1)``: the soft rounding offset in ``[0, 1]``."""
    return torch.clamp(torch.sigmoid(logits) * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW,
                       0, 1)


def _initial_logits(fraction: Tensor) -> Tensor:
    """The ``v`` whose :func:`rectified_sigmoid` is ``fraction`` (each in ``(0, 1)``):
    fitting starts from the weights themselves."""
    fraction = fraction.clamp(1e-4, 1 - 1e-4)
    return -torch.log((STRETCH_HIGH - STRETCH_LOW) / (fraction - STRETCH_LOW) - 1)


def rounding_penalty(offsets: Tensor, sharpness: float) -> Tensor:
    """``sum(1 - |2 h - 1| ** sharpness)``: 0 where every offset ``h`` is 0 or 1, one per
    offset at 0.5."""
    return (1 - (2 * offsets - 1).abs().pow(sharpness)).sum()


def _sharpness(step: int, schedule: RoundingSchedule) -> float:
    start = schedule.warmup * schedule.iterations
    progress = max(0.0, (step - start) / (schedule.iterations - start))
    high, low = schedule.sharpness
    return high - (high - low) * progress


def learned_kernel(conv: nn.Conv2d, inputs: Tensor, targets: Tensor, activation: nn.Module,
                   weight_max: int, schedule: RoundingSchedule = RoundingSchedule(),
                   generator: torch.Generator = None) -> Tensor:
    """``conv``'s kernel ``(C_out, C_in // groups, k, k)`` rounded up or down to its grid
    (multiples of :func:`.fake_quant.kernel_scale` within ``+-weight_max``) so that
    ``activation(conv(inputs))`` approaches ``targets`` ``(N, C_out, H', W')``; each
    channel's largest weight keeps its level (``+-weight_max``). ``conv`` is not
    changed."""
    kernel = conv.weight.detach()
    scale = kernel_scale(kernel, weight_max).view(-1, 1, 1, 1)
    floor = torch.floor(kernel / scale)
    logits = nn.Parameter(_initial_logits(kernel / scale - floor))
    optimizer = torch.optim.Adam([logits], lr=schedule.learning_rate)

    def output(images: Tensor, levels: Tensor) -> Tensor:
        return activation(functional.conv2d(images, levels.clamp(-weight_max, weight_max)
                                            * scale, conv.bias, conv.stride, conv.padding,
                                            conv.dilation, conv.groups))
    for step in range(schedule.iterations):
        batch = torch.randint(0, len(inputs), (min(schedule.batch_size, len(inputs)), ),
                              generator=generator)
        offsets = rectified_sigmoid(logits)
        loss = functional.mse_loss(output(inputs[batch], floor + offsets), targets[batch])
        if step >= schedule.warmup * schedule.iterations:
            loss = loss + schedule.penalty_weight * rounding_penalty(
                offsets, _sharpness(step, schedule))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        levels = (floor + (rectified_sigmoid(logits) >= 0.5)).clamp(-weight_max, weight_max)
        flat_kernel, flat_levels = kernel.flatten(1), levels.flatten(1)
        channels = torch.arange(len(flat_kernel))
        largest = flat_kernel.abs().argmax(dim=1)
        flat_levels[channels, largest] = torch.sign(flat_kernel[channels, largest]) * weight_max
        return flat_levels.view_as(kernel) * scale


def _block_activation(block: RepVGGBlock) -> nn.Module:
    """What follows the block's conv, if it can be applied to the conv's output alone
    (its activation; with squeeze-excitation in between, nothing)."""
    return block.act if block.se_layer is None else nn.Identity()


def _captured(model: nn.Module, module: nn.Module, calibration: Sequence[np.ndarray],
              output: bool) -> Tensor:
    """``module``'s input (or output) while ``model`` runs the calibration batches."""
    captured: List[Tensor] = []
    if output:
        hook = module.register_forward_hook(lambda _, __, out: captured.append(out))
    else:
        hook = module.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            for images in calibration:
                model(torch.from_numpy(images))
    finally:
        hook.remove()
    return torch.cat(captured)


def adaround(model: nn.Module, calibration: Sequence[np.ndarray], weight_bits: int = 8,
             schedule: RoundingSchedule = RoundingSchedule(), seed: int = 0) -> nn.Module:
    """A deploy-form copy of ``model`` whose RepVGG convs hold learned-rounding weights
    on the INT8 grid of ``weight_bits`` (8: +-127; 7: +-64, see :mod:`._host_cpu`).

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        calibration: preprocessed image batches ``(N, C, H, W)`` float32, as the INT8
            file's calibration gets them; every block's input and output on all of them
            are held in memory at once.
        weight_bits: the width the runtime will quantize the weights to.
        schedule: the fitting of each conv (:class:`RoundingSchedule`).
        seed: of the calibration batches each step draws.

    Raises:
        ValueError: ``weight_bits`` is not 8 or 7, no calibration images, or no RepVGG
            block.
    """
    if weight_bits not in INT8_WEIGHT_MAX:
        raise ValueError(f'weight_bits={weight_bits}: INT8 weights here are 8 or 7 bits')
    if not calibration or not sum(len(batch) for batch in calibration):
        raise ValueError('no calibration images: learned rounding fits each conv on '
                         'preprocessed training images; pass at least one batch')
    reference = reparameterize_model(model)
    reference_blocks = [module for module in reference.modules()
                        if isinstance(module, RepVGGBlock)]
    if not reference_blocks:
        raise ValueError(f'{type(model).__name__} has no RepVGG block: learned rounding '
                         'here is for RepVGG convs')
    rounded = copy.deepcopy(reference)
    rounded_blocks = [module for module in rounded.modules() if isinstance(module, RepVGGBlock)]
    generator = torch.Generator().manual_seed(seed)
    weight_max = INT8_WEIGHT_MAX[weight_bits]
    for index, (block, target_block) in enumerate(zip(rounded_blocks, reference_blocks)):
        activation = _block_activation(target_block)
        with torch.no_grad():
            targets = activation(_captured(reference, target_block.branch_reparam,
                                           calibration, output=True))
        # What the runtime will feed this conv: the model rounded so far, every conv
        # input on its uint8 levels (earlier kernels are on their grid already).
        as_runtime = fake_quantize(copy.deepcopy(rounded), calibration, weight_max)
        wrapper = [module for module in as_runtime.modules()
                   if isinstance(module, RepVGGBlock)][index].branch_reparam
        assert isinstance(wrapper, FakeQuantizedConv)
        inputs = wrapper.quantize_input(_captured(as_runtime, wrapper, calibration,
                                                  output=False))
        del as_runtime
        kernel = learned_kernel(block.branch_reparam, inputs, targets, activation,
                                weight_max, schedule, generator)
        with torch.no_grad():
            block.branch_reparam.weight.copy_(kernel)
    return rounded

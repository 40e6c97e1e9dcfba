"""Learned rounding of the deploy convs' weights to the INT8 grid (AdaRound, Nagel et al.,
ICML 2020; docs/int8.md), fitted against INT8 as PyTorch computes it
(:class:`_FakeQuantizedConv`, which the QAT and kernel-emulation instruments share). Each
channel keeps its largest weight, so the runtime's scale is unchanged and quantizing the
FP32 file (``mmrepvgg.export_int8``, nearest rounding) writes exactly the learned levels.
A lab instrument: the product's accuracy-bounded INT8 ladder does without it.
"""
import copy
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from mmrepvgg.deploy._host_cpu import INT8_WEIGHT_MAX
from mmrepvgg.models import RepVGGBlock, reparameterize_blocks, reparameterize_model

# The stretch of the rectified sigmoid: h reaches exactly 0 and 1 at finite v.
STRETCH_LOW, STRETCH_HIGH = -0.1, 1.1


def _kernel_scale(kernel: Tensor, weight_max: int = 127) -> Tensor:
    """``(C_out,)`` ``max |w| / weight_max`` per output channel of ``kernel``."""
    return torch.clamp(kernel.detach().abs().amax(dim=(1, 2, 3)), min=1e-8) / weight_max


def _fake_quantize_kernel(kernel: Tensor, weight_max: int = 127) -> Tensor:
    """``kernel`` rounded to :func:`_kernel_scale`'s grid and back (straight-through)."""
    scale = _kernel_scale(kernel, weight_max)
    zero_points = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(kernel, scale, zero_points, 0, -weight_max,
                                                  weight_max)


class _ObservedInput(nn.Module):
    """A conv input's uint8 quantization: while ``observing``, the range widens to every
    input seen (from ``[0, 0]``, so it holds 0); then inputs are rounded to it."""

    def __init__(self):
        super().__init__()
        self.register_buffer('input_min', torch.tensor(0.0))
        self.register_buffer('input_max', torch.tensor(0.0))
        self.observing = True

    def observe(self, images: Tensor) -> None:
        self.input_min = torch.minimum(self.input_min, images.detach().min())
        self.input_max = torch.maximum(self.input_max, images.detach().max())

    def input_quantization(self) -> Tuple[float, int]:
        """``(scale, zero point)`` of the uint8 levels of the observed range."""
        input_scale = float(torch.clamp(self.input_max - self.input_min, min=1e-8)) / 255
        return input_scale, int(round(float(-self.input_min) / input_scale))

    def quantize_input(self, images: Tensor) -> Tensor:
        """``images`` ``(N, C_in, H, W)`` rounded to the observed range's uint8 levels."""
        input_scale, zero_point = self.input_quantization()
        return torch.fake_quantize_per_tensor_affine(images, input_scale, zero_point,
                                                     0, 255)


class _FakeQuantizedConv(_ObservedInput):
    """A deploy conv whose kernel and input are rounded to INT8 once calibrated."""

    def __init__(self, conv: nn.Conv2d, weight_max: int = 127):
        super().__init__()
        self.conv, self.weight_max = conv, weight_max

    def forward(self, images: Tensor) -> Tensor:
        if self.observing:
            self.observe(images)
            return self.conv(images)
        kernel = _fake_quantize_kernel(self.conv.weight, self.weight_max)
        return self.conv._conv_forward(self.quantize_input(images), kernel, self.conv.bias)


def _wrap_and_calibrate(model: nn.Module, calibration: Sequence[np.ndarray],
                        wrapper_type: type) -> list:
    """Fuse ``model``'s blocks, put a ``wrapper_type`` around each conv and run the
    calibration batches through it in eval mode; returns the wrappers."""
    if not calibration or not sum(len(batch) for batch in calibration):
        raise ValueError('no calibration images: the INT8 input ranges come from '
                         'preprocessed training images; pass at least one batch')
    if any(isinstance(module, _ObservedInput) for module in model.modules()):
        raise ValueError(f'{type(model).__name__} is already fake-quantized; start from '
                         'the checkpoint\'s model')
    reparameterize_blocks(model)
    slots = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]
    if not slots:
        raise ValueError(f'{type(model).__name__} has no Conv2d to quantize; QAT here is '
                         'for conv networks such as RepVGG')
    wrappers: List[nn.Module] = []
    for parent, name, conv in slots:
        wrappers.append(wrapper_type(conv))
        setattr(parent, name, wrappers[-1])
    model.eval()
    with torch.no_grad():
        for images in calibration:
            model(torch.from_numpy(images))
    return wrappers


def _fake_quantize(model: nn.Module, calibration: Sequence[np.ndarray],
                   weight_max: int = 127) -> nn.Module:
    """``model`` itself, its blocks fused and every conv a :class:`_FakeQuantizedConv`
    calibrated on preprocessed batches ``(N, C, H, W)``."""
    for wrapper in _wrap_and_calibrate(model, calibration, _FakeQuantizedConv):
        wrapper.observing = False
        wrapper.weight_max = weight_max
    return model


class _RoundingSchedule(NamedTuple):
    """The fit of each conv: the paper's settings, fewer iterations; ``warmup`` iterations
    (a fraction) without the penalty, whose exponent anneals over ``sharpness``."""
    iterations: int = 500
    batch_size: int = 32
    learning_rate: float = 1e-2
    penalty_weight: float = 0.01
    warmup: float = 0.2
    sharpness: tuple = (20.0, 2.0)


def _rectified_sigmoid(logits: Tensor) -> Tensor:
    """``clamp(sigmoid(v) * 1.2 - 0.1, 0, 1)``: the soft rounding offset in ``[0, 1]``."""
    return torch.clamp(torch.sigmoid(logits) * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW,
                       0, 1)


def _rounding_penalty(offsets: Tensor, sharpness: float) -> Tensor:
    """``sum(1 - |2 h - 1| ** sharpness)``: 0 where every offset ``h`` is 0 or 1."""
    return (1 - (2 * offsets - 1).abs().pow(sharpness)).sum()


def _learned_kernel(conv: nn.Conv2d, inputs: Tensor, targets: Tensor, activation: nn.Module,
                    weight_max: int, schedule: _RoundingSchedule = _RoundingSchedule(),
                    generator: torch.Generator = None) -> Tensor:
    """``conv``'s kernel rounded up or down to its grid so that ``activation(conv(inputs))``
    approaches ``targets`` ``(N, C_out, H', W')``. ``conv`` is not changed."""
    kernel = conv.weight.detach()
    scale = _kernel_scale(kernel, weight_max).view(-1, 1, 1, 1)
    floor = torch.floor(kernel / scale)
    # Start from the weights themselves: the v whose rectified sigmoid is their fraction.
    fraction = (kernel / scale - floor).clamp(1e-4, 1 - 1e-4)
    logits = nn.Parameter(-torch.log((STRETCH_HIGH - STRETCH_LOW) / (fraction - STRETCH_LOW)
                                     - 1))
    optimizer = torch.optim.Adam([logits], lr=schedule.learning_rate)
    warmup_steps = schedule.warmup * schedule.iterations
    high, low = schedule.sharpness
    for step in range(schedule.iterations):
        batch = torch.randint(0, len(inputs), (min(schedule.batch_size, len(inputs)), ),
                              generator=generator)
        offsets = _rectified_sigmoid(logits)
        levels = (floor + offsets).clamp(-weight_max, weight_max)
        outputs = activation(functional.conv2d(inputs[batch], levels * scale, conv.bias,
                                               conv.stride, conv.padding, conv.dilation,
                                               conv.groups))
        loss = functional.mse_loss(outputs, targets[batch])
        if step >= warmup_steps:
            progress = (step - warmup_steps) / (schedule.iterations - warmup_steps)
            loss = loss + schedule.penalty_weight * _rounding_penalty(
                offsets, high - (high - low) * progress)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        levels = (floor + (_rectified_sigmoid(logits) >= 0.5)).clamp(-weight_max, weight_max)
        flat_kernel, flat_levels = kernel.flatten(1), levels.flatten(1)
        channels = torch.arange(len(flat_kernel))
        largest = flat_kernel.abs().argmax(dim=1)
        flat_levels[channels, largest] = torch.sign(flat_kernel[channels, largest]) * weight_max
        return flat_levels.view_as(kernel) * scale


def _captured(model: nn.Module, module: nn.Module, calibration: Sequence[np.ndarray],
              output: bool) -> Tensor:
    """``module``'s input (or output) while ``model`` runs the calibration batches."""
    captured: List[Tensor] = []
    hook = module.register_forward_hook(
        lambda _, args, out: captured.append(out if output else args[0]))
    try:
        with torch.no_grad():
            for images in calibration:
                model(torch.from_numpy(images))
    finally:
        hook.remove()
    return torch.cat(captured)


def _blocks(model: nn.Module) -> List[RepVGGBlock]:
    return [module for module in model.modules() if isinstance(module, RepVGGBlock)]


def adaround(model: nn.Module, calibration: Sequence[np.ndarray], weight_bits: int = 8,
             schedule: _RoundingSchedule = _RoundingSchedule(), seed: int = 0) -> nn.Module:
    """A deploy-form copy of ``model`` whose RepVGG convs hold learned-rounding weights
    on the INT8 grid of ``weight_bits``, fitted on preprocessed ``calibration`` batches
    ``(N, C, H, W)`` float32 (all held in memory); ValueError for a bad request."""
    if weight_bits not in INT8_WEIGHT_MAX:
        raise ValueError(f'weight_bits={weight_bits}: INT8 weights here are 8 or 7 bits')
    if not calibration or not sum(len(batch) for batch in calibration):
        raise ValueError('no calibration images: learned rounding fits each conv on '
                         'preprocessed training images; pass at least one batch')
    reference = reparameterize_model(model)
    if not _blocks(reference):
        raise ValueError(f'{type(model).__name__} has no RepVGG block: learned rounding '
                         'here is for RepVGG convs')
    rounded = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(seed)
    weight_max = INT8_WEIGHT_MAX[weight_bits]
    for index, (block, target_block) in enumerate(zip(_blocks(rounded), _blocks(reference))):
        # With squeeze-excitation between the conv and its activation, only the conv's
        # output can be fitted.
        activation = target_block.act if target_block.se_layer is None else nn.Identity()
        with torch.no_grad():
            targets = activation(_captured(reference, target_block.branch_reparam,
                                           calibration, output=True))
        # What the runtime will feed this conv: the model rounded so far, every conv
        # input on its uint8 levels (earlier kernels are on their grid already).
        as_runtime = _fake_quantize(copy.deepcopy(rounded), calibration, weight_max)
        wrapper = _blocks(as_runtime)[index].branch_reparam
        assert isinstance(wrapper, _FakeQuantizedConv)
        inputs = wrapper.quantize_input(_captured(as_runtime, wrapper, calibration,
                                                  output=False))
        del as_runtime
        kernel = _learned_kernel(block.branch_reparam, inputs, targets, activation,
                                 weight_max, schedule, generator)
        with torch.no_grad():
            block.branch_reparam.weight.copy_(kernel)
    return rounded

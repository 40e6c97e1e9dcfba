"""Post-training INT8 as PyTorch computes it: each deploy conv's kernel rounded to
symmetric integers per output channel (scale ``max |w| / weight_max``) and its input to the
uint8 levels of the min-max range of the calibration images (including 0), with
straight-through gradients (``torch.fake_quantize_*``). :mod:`._adaround` fits the rounding
of each conv against it.
"""
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..models import reparameterize_blocks


def kernel_scale(kernel: Tensor, weight_max: int = 127) -> Tensor:
    """The per-output-channel scales ``(C_out,)`` of symmetric integer weights within
    ``+-weight_max`` (127: int8; 64: 7 bits): ``max |w| / weight_max`` per channel of
    ``kernel`` ``(C_out, C_in // groups, k, k)``."""
    return torch.clamp(kernel.detach().abs().amax(dim=(1, 2, 3)), min=1e-8) / weight_max


def fake_quantize_kernel(kernel: Tensor, weight_max: int = 127) -> Tensor:
    """``kernel`` ``(C_out, C_in // groups, k, k)`` rounded to symmetric integers within
    ``+-weight_max`` per output channel (:func:`kernel_scale`) and back, with a
    straight-through gradient."""
    scale = kernel_scale(kernel, weight_max)
    return torch.fake_quantize_per_channel_affine(
        kernel, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -weight_max,
        weight_max)


class _ObservedInput(nn.Module):
    """The per-tensor uint8 quantization of a conv's input: while ``observing``, the
    range ``[input_min, input_max]`` widens to every input seen (it starts at ``[0, 0]``,
    so it holds 0); afterwards inputs are rounded to its 256 levels."""

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


class FakeQuantizedConv(_ObservedInput):
    """A deploy conv whose kernel and input are rounded to INT8 in the forward pass.

    Args:
        conv: the deploy conv (kept as ``self.conv``).
        weight_max: the kernel's integer range, ``+-weight_max`` (127: int8; 64: 7 bits).
    """

    def __init__(self, conv: nn.Conv2d, weight_max: int = 127):
        super().__init__()
        self.conv, self.weight_max = conv, weight_max

    def forward(self, images: Tensor) -> Tensor:
        """``images``: ``(N, C_in, H, W)``; calibration passes them unchanged."""
        if self.observing:
            self.observe(images)
            return self.conv(images)
        return self.conv._conv_forward(self.quantize_input(images),
                                       fake_quantize_kernel(self.conv.weight, self.weight_max),
                                       self.conv.bias)


def _conv_slots(model: nn.Module) -> List[Tuple[nn.Module, str, nn.Conv2d]]:
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]


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
    slots = _conv_slots(model)
    if not slots:
        raise ValueError(f'{type(model).__name__} has no Conv2d to quantize; QAT here is '
                         'for conv networks such as RepVGG')
    wrappers = []
    for parent, name, conv in slots:
        wrappers.append(wrapper_type(conv))
        setattr(parent, name, wrappers[-1])
    model.eval()
    with torch.no_grad():
        for images in calibration:
            model(torch.from_numpy(images))
    return wrappers


def fake_quantize(model: nn.Module, calibration: Sequence[np.ndarray],
                  weight_max: int = 127) -> nn.Module:
    """Fuse ``model``'s blocks (in place), wrap every conv in a
    :class:`FakeQuantizedConv` (kernels within ``+-weight_max``) and set the input ranges
    from ``calibration`` batches ``(N, C, H, W)`` float32 (preprocessed). Returns
    ``model``.

    Raises:
        ValueError: no calibration images, no conv, or a model already prepared.
    """
    for wrapper in _wrap_and_calibrate(model, calibration, FakeQuantizedConv):
        wrapper.observing = False
        wrapper.weight_max = weight_max
    return model

"""What INT8 convs compute on an x86 CPU without VNNI, emulated on any CPU.

There, u8 x s8 kernels multiply the uint8 input and int8 weight of two neighbouring
reduction elements and add the two products into a *saturating* int16 (``vpmaddubsw``)
before widening to int32; ``255 * 127 * 2 = 64770`` does not fit in int16, so large
inputs times large weights are clipped (onnxruntime issue 12088). This module computes a
:class:`lab.adaround._FakeQuantizedConv` in integers, exactly or with that
pairwise saturation, so that a VNNI host can measure what the saturation alone costs a
model. The
pairs follow ONNX Runtime's NHWC order of the reduction (kernel row, kernel column, input
channel; channel fastest; an odd reduction padded at its end), as its own u8s8 conv pairs
them on an AVX2-only CPU (benchmarks/tests/test_avx2_only.py runs that conv under
as_avx2_only.py).
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from lab.adaround import _FakeQuantizedConv as FakeQuantizedConv
from lab.adaround import _kernel_scale as kernel_scale
from mmrepvgg.deploy._host_cpu import INT16_MAX

INT16_MIN = -INT16_MAX - 1


def quantization_parameters(wrapper: FakeQuantizedConv, weight_max: int = 127
                            ) -> Tuple[float, int, Tensor]:
    """``(input scale, input zero point, weight scales (C_out, ))`` of a calibrated
    :class:`~lab.adaround._FakeQuantizedConv`, as its forward pass uses them
    (``weight_max`` 127), or with weights of a narrower symmetric range (64: 7-bit weights)."""
    input_scale, zero_point = wrapper.input_quantization()
    return input_scale, zero_point, kernel_scale(wrapper.conv.weight, weight_max)


def integer_conv(wrapper: FakeQuantizedConv, images: Tensor, saturate_pairs: bool,
                 weight_max: int = 127) -> Tuple[Tensor, float]:
    """The conv of ``wrapper`` on ``images`` ``(N, C_in, H, W)`` in integer arithmetic:
    uint8 inputs, int8 weights within ``+-weight_max`` (64: 7 bits), int32 sums,
    optionally with every pair of products saturated to int16; returns the dequantized
    output ``(N, C_out, H', W')`` and the share of pairs that saturated (0 without
    ``saturate_pairs``)."""
    conv = wrapper.conv
    if conv.groups != 1:
        raise ValueError('the emulation covers dense convs (groups=1) only')
    input_scale, zero_point, weight_scale = quantization_parameters(wrapper, weight_max)
    quantized = torch.clamp(torch.round(images / input_scale) + zero_point, 0, 255)
    weight = torch.clamp(torch.round(conv.weight.detach() / weight_scale[:, None, None, None]),
                         -weight_max, weight_max)
    # Padding holds the zero point (real 0): unfold pads with 0, so shift around it.
    columns = nn.functional.unfold(quantized - zero_point, conv.kernel_size, conv.dilation,
                                   conv.padding, conv.stride) + zero_point
    batch, _, positions = columns.shape
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    # (c, tap) order -> (tap, c): channels of one tap are neighbours.
    columns = columns.reshape(batch, in_channels, taps, positions).transpose(1, 2).reshape(
        batch, taps * in_channels, positions).double()
    weight = weight.reshape(out_channels, in_channels, taps).transpose(1, 2).reshape(
        out_channels, taps * in_channels).double()
    if weight.shape[1] % 2:  # an odd reduction is padded with a zero weight
        columns = nn.functional.pad(columns, (0, 0, 0, 1))
        weight = nn.functional.pad(weight, (0, 1))
    pairs = (columns[:, None, 0::2] * weight[None, :, 0::2, None]
             + columns[:, None, 1::2] * weight[None, :, 1::2, None])
    saturated_share = 0.0
    if saturate_pairs:
        clipped = torch.clamp(pairs, INT16_MIN, INT16_MAX)
        saturated_share = float((clipped != pairs).double().mean())
        pairs = clipped
    sums = pairs.sum(dim=2) - zero_point * weight.sum(dim=1)[None, :, None]
    output = sums.float() * (input_scale * weight_scale)[None, :, None]
    if conv.bias is not None:
        output = output + conv.bias.detach()[None, :, None]
    height = (images.shape[2] + 2 * conv.padding[0] - conv.dilation[0] * (kernel_h - 1)
              - 1) // conv.stride[0] + 1
    return output.reshape(batch, out_channels, height, positions // height), saturated_share


class IntegerConvEmulation:
    """While active (a context manager), every
    :class:`lab.adaround._FakeQuantizedConv` of ``model`` computes by
    :func:`integer_conv`; ``saturated_share`` collects the share
    of saturated pairs per conv call; ``weight_max`` as for :func:`integer_conv`."""

    def __init__(self, model: nn.Module, saturate_pairs: bool, weight_max: int = 127):
        self.wrappers = [module for module in model.modules()
                         if isinstance(module, FakeQuantizedConv)]
        self.saturate_pairs = saturate_pairs
        self.weight_max = weight_max
        self.saturated_share = []

    def __enter__(self):
        for wrapper in self.wrappers:
            wrapper.forward = self._forward(wrapper)
        return self

    def _forward(self, wrapper):
        def forward(images: Tensor) -> Tensor:
            output, share = integer_conv(wrapper, images, self.saturate_pairs,
                                         self.weight_max)
            self.saturated_share.append(share)
            return output
        return forward

    def __exit__(self, *exc_info):
        for wrapper in self.wrappers:
            del wrapper.forward  # back to the class's forward

"""Quantization-aware fine-tuning of the deploy form: every conv sees INT8 weights and
INT8 inputs in the forward pass (fake quantization) while gradients flow through as if
it did not (the straight-through estimator), so a few epochs move the FP32 weights to
where rounding hurts least. The result is exported to real INT8 by the usual path
(:func:`.quantization.export_int8`).

The fake quantization copies what that INT8 file computes: per-output-channel symmetric
int8 weights (scale ``max |w| / 127`` per channel) and per-tensor uint8 inputs whose range
is the min-max over calibration images, including 0. Unlike the official repository's
QAT, the deploy form is fine-tuned as is (one fused conv per block, no BN re-inserted).
"""
from typing import Iterable, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..models import reparameterize_blocks


class FakeQuantizedConv(nn.Module):
    """A conv whose weights and input are rounded to INT8 in the forward pass.

    Args:
        conv: the deploy conv (its weights are trained in place).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.register_buffer('input_min', torch.tensor(0.0))
        self.register_buffer('input_max', torch.tensor(0.0))
        self.observing = True

    def forward(self, images: Tensor) -> Tensor:
        """``images``: ``(N, C_in, H, W)``."""
        if self.observing:  # calibration: widen the range, pass the input unchanged
            self.input_min = torch.minimum(self.input_min, images.detach().min())
            self.input_max = torch.maximum(self.input_max, images.detach().max())
            return self.conv(images)
        input_scale = float(torch.clamp(self.input_max - self.input_min, min=1e-8)) / 255
        zero_point = int(round(float(-self.input_min) / input_scale))
        images = torch.fake_quantize_per_tensor_affine(images, input_scale, zero_point,
                                                       0, 255)
        weight = self.conv.weight
        # max |w| / 127 per output channel, computed from the current weights.
        weight_scale = torch.clamp(weight.detach().abs().amax(dim=(1, 2, 3)), min=1e-8) / 127
        weight = torch.fake_quantize_per_channel_affine(
            weight, weight_scale, torch.zeros_like(weight_scale, dtype=torch.int32), 0,
            -127, 127)
        return self.conv._conv_forward(images, weight, self.conv.bias)


def _convs(model: nn.Module) -> List[tuple]:
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, nn.Conv2d)]


def prepare_qat(model: nn.Module, calibration: Sequence[np.ndarray]) -> nn.Module:
    """Fuse ``model``'s blocks (in place), wrap every conv in a
    :class:`FakeQuantizedConv` and set the input ranges from ``calibration`` batches
    ``(N, C, H, W)`` float32 (preprocessed). Returns ``model``."""
    reparameterize_blocks(model)
    wrappers = []
    for parent, name, conv in _convs(model):
        wrapper = FakeQuantizedConv(conv)
        setattr(parent, name, wrapper)
        wrappers.append(wrapper)
    model.eval()
    with torch.no_grad():
        for images in calibration:
            model(torch.from_numpy(images))
    for wrapper in wrappers:
        wrapper.observing = False
    return model


def finetune_qat(model: nn.Module, batches: Iterable[tuple], epochs: int,
                 learning_rate: float) -> List[float]:
    """Fine-tune a :func:`prepare_qat` model with SGD (momentum 0.9) and cross-entropy
    on ``(images, labels)`` batches (NumPy, preprocessed), ``epochs`` passes; returns the
    mean loss of each epoch. The model stays in eval mode (no BN or dropout to train in
    the deploy form)."""
    batches = list(batches)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=learning_rate, momentum=0.9)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for images, labels in batches:
            logits = model(torch.from_numpy(images))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels).long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        losses.append(total / len(batches))
    return losses


def strip_qat(model: nn.Module) -> nn.Module:
    """Put the fine-tuned convs back in place of their wrappers (in place); the model is
    then an ordinary deploy model for :func:`.quantization.export_int8`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantizedConv):
                setattr(parent, name, child.conv)
    return model

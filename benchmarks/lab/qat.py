"""Quantization-aware fine-tuning (QAT) of the deploy form, with BN re-inserted as the
official repository does, then exported to real INT8 by the usual path
(:func:`mmrepvgg.deploy.quantization.export_int8`).

A fused deploy conv ``y = W * x + b`` has no normalization left, so fine-tuning it directly
is badly conditioned. :func:`prepare_qat` therefore splits each one into a bias-free conv
and a BatchNorm initialised to be the identity on it: ``running_mean`` and
``running_var`` are the per-channel mean and variance of ``W * x`` on the calibration
images, ``gamma = sqrt(running_var + eps)`` and ``beta = running_mean + b``, so the
eval-mode BN gives back ``W * x + b``. :func:`finetune_qat` trains with the BNs on batch
statistics, then (last epoch by default) on frozen running statistics;
:func:`strip_qat` folds them back into plain deploy convs.

What is fake-quantized is what the INT8 file will hold: the BN-folded kernel
``W * gamma / sqrt(running_var + eps)`` (per-output-channel symmetric int8, scale
``max |w| / 127`` per channel) and each conv input (per-tensor uint8, the min-max range of
the calibration images including 0). In training, as in torch's fused ConvBn QAT, the
conv output is divided by ``gamma / sqrt(running_var + eps)`` again before the
batch-statistics BN; in eval mode the module computes the folded conv exactly as the
stripped model does. Gradients pass through the rounding unchanged (the straight-through
estimator of ``torch.fake_quantize_*``).

The rounding itself (:func:`lab.adaround._fake_quantize_kernel`, the input
ranges) is post-training INT8's, from :mod:`lab.adaround`.
"""
from typing import Iterable, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lab.adaround import _fake_quantize_kernel as fake_quantize_kernel
from lab.adaround import _ObservedInput, _wrap_and_calibrate
from mmrepvgg.reparam import BatchNormStats, KernelBias, fuse_conv_bn


class FakeQuantizedConvBN(_ObservedInput):
    """A deploy conv re-split into a bias-free conv ``self.conv`` and ``self.bn``, for QAT.

    While ``observing`` it computes the deploy conv and accumulates the per-channel
    moments of its pre-bias output; :meth:`start_from_calibration` then sets the BN as the
    module docstring says. ``fake_quant = False`` turns the rounding off.

    Args:
        conv: the deploy conv, weight ``W`` ``(C_out, C_in // groups, k, k)`` and bias
            ``b`` ``(C_out,)`` (or none); changed in place to drop its bias.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        channels = conv.out_channels
        bias = conv.weight.new_zeros(channels) if conv.bias is None else conv.bias.detach().clone()
        conv.register_parameter('bias', None)
        self.conv = conv
        # momentum None: fine-tuning leaves the running statistics at the average of all
        # its batch statistics, not at an EMA led by the last few (noisy) batches.
        self.bn = nn.BatchNorm2d(channels, momentum=None).to(conv.weight)
        with torch.no_grad():
            self.bn.bias.copy_(bias)  # beta = b until calibration adds the mean
        self.fake_quant = True
        # Of W * x: values per channel seen, and their sum and sum of squares (float64).
        self._count = 0
        self._sums = torch.zeros(2, channels, dtype=torch.float64, device=conv.weight.device)

    def batch_norm_stats(self) -> BatchNormStats:
        bn = self.bn
        return BatchNormStats(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)

    def folded_kernel_bias(self) -> KernelBias:
        """The conv with the eval-mode BN folded in (the kernel the INT8 file holds)."""
        return fuse_conv_bn(self.conv.weight, self.batch_norm_stats())

    def start_from_calibration(self) -> None:
        """Set the BN from the moments observed: the identity on ``W * x``, plus ``b``."""
        if not self._count:
            raise ValueError('a conv saw no calibration images; calibrate before QAT')
        mean, mean_square = self._sums / self._count
        var = torch.clamp(mean_square - mean ** 2, min=0)
        bn = self.bn
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mean.to(bn.bias))
        self.observing = False

    def forward(self, images: Tensor) -> Tensor:
        """``images``: ``(N, C_in, H, W)`` -> ``(N, C_out, H', W')``."""
        if self.observing:  # the deploy conv, measured
            self.observe(images)
            deploy_bias = self.bn.bias.detach()
            # The deploy conv itself (one conv with its bias), so that later convs
            # observe the very inputs the deploy model gives them.
            outputs = self.conv._conv_forward(images, self.conv.weight, deploy_bias)
            pre_bias = outputs.detach().double() - deploy_bias.double()[:, None, None]
            self._count += pre_bias[:, 0].numel()
            self._sums += torch.stack([pre_bias.sum(dim=(0, 2, 3)),
                                       pre_bias.square().sum(dim=(0, 2, 3))])
            return outputs
        if self.fake_quant:
            images = self.quantize_input(images)
        kernel, bias = self.folded_kernel_bias()
        if self.fake_quant:
            kernel = fake_quantize_kernel(kernel)
        if not self.training:  # what the stripped model and the INT8 file compute
            return self.conv._conv_forward(images, kernel, bias)
        bn = self.bn
        bn_scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        # Undo the fold so that the BN normalizes the conv's own output by batch statistics.
        return bn(self.conv._conv_forward(images, kernel, None) / bn_scale[:, None, None])


def prepare_qat(model: nn.Module, calibration: Sequence[np.ndarray]) -> nn.Module:
    """Fuse ``model``'s blocks (in place), replace every conv by a
    :class:`FakeQuantizedConvBN` and set its input range and BN from ``calibration``
    batches ``(N, C, H, W)`` float32 (preprocessed). In eval mode with ``fake_quant``
    off, the result computes what the deploy model did. Returns ``model``.

    Raises:
        ValueError: no calibration images, no conv, or a model already prepared.
    """
    for wrapper in _wrap_and_calibrate(model, calibration, FakeQuantizedConvBN):
        wrapper.start_from_calibration()
    return model


def finetune_qat(model: nn.Module, batches: Iterable[tuple], epochs: int,
                 learning_rate: float = 1e-5, frozen_bn_epochs: int = 1) -> List[float]:
    """Fine-tune a :func:`prepare_qat` model with SGD (momentum 0.9, no weight decay) and
    cross-entropy on ``(images, labels)`` batches (NumPy, preprocessed: images
    ``(N, C, H, W)`` float32, labels ``(N,)``), ``epochs`` passes; returns the mean loss
    of each epoch. Everything but the re-inserted BNs stays in eval mode, and the model
    is left in eval mode.

    The BNs normalize by batch statistics, and end with running statistics averaged over
    those batches, except in the last ``frozen_bn_epochs`` epochs: there they keep their
    running statistics (torch's ``freeze_bn_stats``), so that training sees exactly the
    folded convs the INT8 file will hold and adapts to those statistics.
    """
    batches = list(batches)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=learning_rate, momentum=0.9)
    wrappers = [module for module in model.modules()
                if isinstance(module, FakeQuantizedConvBN)]
    losses = []
    for epoch in range(epochs):
        model.eval()
        for wrapper in wrappers:
            wrapper.train()
            if epoch >= epochs - frozen_bn_epochs:
                wrapper.bn.eval()
        total = 0.0
        for images, labels in batches:
            logits = model(torch.from_numpy(images))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels).long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        losses.append(total / len(batches))
    model.eval()
    return losses


def strip_qat(model: nn.Module) -> nn.Module:
    """Fold every :class:`FakeQuantizedConvBN`'s BN into its conv (kernel and bias, in
    float64 by :func:`mmrepvgg.reparam.fuse_conv_bn`) and put the conv in its place (in place);
    the model is then an ordinary deploy model for
    :func:`mmrepvgg.deploy.quantization.export_int8`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantizedConvBN):
                kernel, bias = (tensor.detach() for tensor in child.folded_kernel_bias())
                conv = child.conv
                conv.weight = nn.Parameter(kernel)
                conv.bias = nn.Parameter(bias)
                setattr(parent, name, conv)
    return model

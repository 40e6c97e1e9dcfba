"""The recommended way to run a RepVGG for inference.

A deployed RepVGG is a stack of 3x3 convs + ReLU, so what pays on a CPU is what helps
oneDNN's direct convolution: NHWC (channels-last) activations, no autograd bookkeeping
(``torch.inference_mode``) and, optionally, a compiled graph with frozen weights, in
which inductor pre-packs every kernel and fuses bias and ReLU into the conv. Measured
on the project's shared 2-core CPU at 1 thread, A0 deploy at batch 16 (docs/benchmarks.md):
channels-last x1.30 over the eager NCHW deploy model (1.12x mmpretrain's deploy form);
compiling gained nothing more there and costs ~20-35 s per new input shape, so it is
opt-in.
"""
import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..models import reparameterize_blocks

INFERENCE_BACKENDS = ('eager', 'compile')


class InferenceModel(nn.Module):
    """A deployed model that takes NCHW images and runs them channels-last without
    autograd.

    Calling it returns what the wrapped model returns (for mmpretrain classifiers, the
    ``mode='tensor'`` output: logits ``(N, num_classes)``), as inference tensors.
    """

    def __init__(self, deploy_model: nn.Module, runner: Any):
        super().__init__()
        self.deploy_model = deploy_model
        self._runner = runner  # deploy_model itself or its compiled form

    def forward(self, images: Tensor) -> Any:
        """``images``: ``(N, C, H, W)`` in any memory format."""
        with torch.inference_mode():
            return self._runner(images.contiguous(memory_format=torch.channels_last))


def prepare_for_inference(model: nn.Module, backend: str = 'eager',
                          inplace: bool = False) -> InferenceModel:
    """Return the fastest form of ``model`` for inference that computes the same
    function (relative difference to the eager deploy model below 1e-5).

    Args:
        model: any model holding RepVGG blocks, in train or deploy form; train-form
            blocks are fused (structural re-parameterization) first.
        backend: ``'eager'``: deploy form, eval mode, channels-last weights and inputs,
            ``torch.inference_mode``. ``'compile'``: the same, compiled by
            ``torch.compile`` with frozen weights (needs a C++ compiler; the first call
            with each new input shape compiles, ~20-30 s on 2 CPU cores).
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        An :class:`InferenceModel`; its ``deploy_model`` holds the converted weights.
    """
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f'unknown inference backend {backend!r}; choose one of '
                         f'{", ".join(INFERENCE_BACKENDS)}')
    deploy_model = model if inplace else copy.deepcopy(model)
    reparameterize_blocks(deploy_model)  # a no-op for a deployed model
    deploy_model.eval()
    for param in deploy_model.parameters():
        param.requires_grad_(False)
    deploy_model.to(memory_format=torch.channels_last)
    runner = deploy_model
    if backend == 'compile':
        # freezing: weights become constants, so inductor can pre-pack them for oneDNN.
        runner = torch.compile(deploy_model, options={'freezing': True})
    return InferenceModel(deploy_model, runner)

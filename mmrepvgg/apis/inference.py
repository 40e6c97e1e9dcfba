"""The recommended way to run a RepVGG for inference.

A deployed RepVGG is a stack of 3x3 convs + ReLU, so what pays on a CPU is what helps
oneDNN's direct convolution: NHWC (channels-last) activations, no autograd bookkeeping
(``torch.inference_mode``) and, optionally, a compiled graph with frozen weights, in
which inductor pre-packs every kernel and fuses bias and ReLU into the conv. Compiling
costs seconds per new input shape, so it is opt-in. Faster still, at a small cost in
accuracy, is static INT8 in ONNX Runtime or OpenVINO (``backend='onnxruntime-int8'`` or
``'openvino-int8'``; see :func:`prepare_for_inference`), or inside PyTorch
(``'torch-int8'``: PT2E and Inductor). What each path gained on which
machine: docs/benchmarks.md.
"""
import os
import tempfile
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..models import reparameterize_model

INFERENCE_BACKENDS = ('eager', 'compile', 'onnxruntime-int8', 'openvino-int8', 'torch-int8')


class InferenceModel(nn.Module):
    """A deployed model that takes NCHW images and runs them channels-last without
    autograd.

    Calling it returns what the wrapped model returns (for mmpretrain classifiers, the
    ``mode='tensor'`` output: logits ``(N, num_classes)``), as inference tensors.
    """

    def __init__(self, deploy_model: nn.Module, runner: Any):
        super().__init__()
        self.deploy_model = deploy_model
        # deploy_model itself or its compiled form: held in a tuple so that nn.Module does
        # not register it a second time (its weights would appear twice in state_dict).
        self._runner = (runner, )

    def forward(self, images: Tensor) -> Any:
        """``images``: ``(N, C, H, W)`` in any memory format."""
        with torch.inference_mode():
            return self._runner[0](images.contiguous(memory_format=torch.channels_last))


def _calibration_batches(backend: str, calibration_images: Optional[Sequence[Tensor]]):
    if not calibration_images:
        raise ValueError(f"backend={backend!r} needs calibration_images: a few "
                         'batches (N, C, H, W) of real, preprocessed training images '
                         '(the activation ranges come from them)')
    return [images.detach().float().cpu().numpy() for images in calibration_images]


def _int8_model(deploy_model: nn.Module, backend: str,
                calibration_images: Optional[Sequence[Tensor]],
                num_threads: Optional[int]) -> nn.Module:
    """The INT8 file of ``backend`` written to a temporary folder and loaded by the
    runtime's adapter (which holds the model in memory)."""
    batches = _calibration_batches(backend, calibration_images)
    with tempfile.TemporaryDirectory() as workdir:
        if backend == 'onnxruntime-int8':
            # Imported here: onnx and onnxruntime are the optional [onnx] extra.
            from ..deploy.onnx_runtime import OnnxRuntimeModel
            from ..deploy.quantization import export_int8
            path = export_int8(deploy_model, os.path.join(workdir, 'int8.onnx'),
                               batches).path
            return OnnxRuntimeModel(path, num_threads)
        # openvino and nncf are the optional [openvino] extra.
        from ..deploy.openvino_runtime import OpenVINOModel, export_openvino
        path = export_openvino(deploy_model, os.path.join(workdir, 'int8.xml'),
                               (1, *batches[0].shape[1:]), batches).path
        return OpenVINOModel(path, num_threads)


def prepare_for_inference(model: nn.Module, backend: str = 'eager',
                          inplace: bool = False,
                          calibration_images: Optional[Sequence[Tensor]] = None,
                          num_threads: Optional[int] = None) -> nn.Module:
    """Return a fast form of ``model`` for inference.

    ``'eager'`` and ``'compile'`` compute the same function as the eager deploy model
    (relative difference below 1e-5). The two INT8 backends are faster at a small cost
    in accuracy; how much faster and how accurate depends on the CPU (VNNI or not) and
    the model: docs/int8.md says how to measure both on your host, and
    docs/benchmarks.md ("INT8") gives the figures measured on the project's machine.
    On ImageNet, Chu et al. (AAAI 2024) report a large drop for plain RepVGG-A0 under
    standard post-training INT8 (72.4 % -> 52.2 %), not measured here.

    Args:
        model: any model holding RepVGG blocks, in train or deploy form; train-form
            blocks are fused (structural re-parameterization) first.
        backend: ``'eager'``: deploy form, eval mode, channels-last weights and inputs,
            ``torch.inference_mode``. ``'compile'``: the same, compiled by
            ``torch.compile`` with frozen weights (needs a C++ compiler; the first call
            with each new input shape compiles, which takes seconds).
            ``'onnxruntime-int8'``: the deploy form exported to ONNX and quantized to
            static per-channel INT8 (:mod:`mmrepvgg.deploy.quantization`), run by
            ONNX Runtime on the CPU; needs the ``[onnx]`` extra and
            ``calibration_images``. Takes the calibration images' (C, H, W), any batch.
            ``'openvino-int8'``: the same deploy form quantized by NNCF and compiled by
            OpenVINO for the CPU (:mod:`mmrepvgg.deploy.openvino_runtime`); needs the
            ``[openvino]`` extra and ``calibration_images``.
            ``'torch-int8'``: the deploy form quantized inside PyTorch by PT2E with the
            x86 Inductor quantizer and compiled by Inductor
            (:func:`mmrepvgg.deploy.torch_int8.quantize_pt2e_model`); needs the
            ``[torch-int8]`` extra (torchao) and ``calibration_images``; the first call
            with each new input shape compiles (seconds).
        inplace: convert ``model`` itself instead of a deep copy.
        calibration_images: for the INT8 backends: batches ``(N, C, H, W)`` of
            real training images, preprocessed as the model receives them (a few hundred
            images in all; ``tools/deployment/pytorch2onnx.py --quantize int8`` takes them
            from a config's dataloader).
        num_threads: for the ONNX Runtime and OpenVINO backends: the runtime's threads
            (default: its own); PyTorch's are ``torch.set_num_threads``'s.

    Returns:
        An :class:`InferenceModel` (its ``deploy_model`` holds the converted weights), or
        for ``'onnxruntime-int8'`` a :class:`mmrepvgg.deploy.onnx_runtime.OnnxRuntimeModel`,
        for ``'openvino-int8'`` a :class:`mmrepvgg.deploy.openvino_runtime.OpenVINOModel`,
        for ``'torch-int8'`` a :class:`mmrepvgg.deploy.torch_int8.PT2EInt8Model`
        (images tensor in, logits tensor out, as the PyTorch model).
    """
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f'unknown inference backend {backend!r}; choose one of '
                         f'{", ".join(INFERENCE_BACKENDS)}')
    deploy_model = reparameterize_model(model, inplace)
    if backend == 'torch-int8':
        # Imported here: torchao is the optional [torch-int8] extra.
        from ..deploy.torch_int8 import quantize_pt2e_model
        return quantize_pt2e_model(deploy_model, _calibration_batches(backend,
                                                                      calibration_images))
    if backend in ('onnxruntime-int8', 'openvino-int8'):
        return _int8_model(deploy_model, backend, calibration_images, num_threads)
    for param in deploy_model.parameters():
        param.requires_grad_(False)
    deploy_model.to(memory_format=torch.channels_last)
    runner = deploy_model
    if backend == 'compile':
        # freezing: weights become constants, so inductor can pre-pack them for oneDNN.
        runner = torch.compile(deploy_model, options={'freezing': True})
    return InferenceModel(deploy_model, runner)

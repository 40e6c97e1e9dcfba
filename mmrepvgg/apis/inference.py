"""The recommended way to run a RepVGG for inference: :func:`prepare_for_inference`
(docs/int8.md and docs/benchmarks.md tell what each backend gains)."""
import os
import tempfile
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..models import reparameterize_model

INFERENCE_BACKENDS = ('eager', 'compile', 'onnxruntime-int8', 'openvino-int8', 'torch-int8')


class _InferenceModel(nn.Module):
    """A deployed model that runs ``(N, C, H, W)`` images channels-last without autograd;
    returns what the wrapped model returns (a classifier's logits ``(N, num_classes)``)."""

    def __init__(self, deploy_model: nn.Module, runner: Any):
        super().__init__()
        self.deploy_model = deploy_model
        # deploy_model itself or its compiled form: held in a tuple so that nn.Module does
        # not register it a second time (its weights would appear twice in state_dict).
        self._runner = (runner, )

    def forward(self, images: Tensor) -> Any:
        with torch.inference_mode():
            return self._runner[0](images.contiguous(memory_format=torch.channels_last))


def _int8_model(deploy_model: nn.Module, backend: str, calibration_images: Sequence[Tensor],
                num_threads: Optional[int]) -> nn.Module:
    batches = [images.detach().float().cpu().numpy() for images in calibration_images]
    if backend == 'torch-int8':
        # Imported here: torchao is the optional [torch-int8] extra.
        from ..deploy.torch_int8 import quantize_pt2e_model
        return quantize_pt2e_model(deploy_model, batches)
    # The runtime's adapter holds the model in memory: the file may go with its folder.
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
    """Return a fast form of ``model`` (train or deploy form; fused first) for inference.

    ``backend``: ``'eager'`` (deploy form, channels-last, ``torch.inference_mode``),
    ``'compile'`` (the same through ``torch.compile`` with frozen weights; needs a C++
    compiler, compiles per input shape), or an INT8 one, faster at a small cost in accuracy
    (docs/int8.md): ``'onnxruntime-int8'`` (``[onnx]`` extra; the calibration images'
    (C, H, W), any batch), ``'openvino-int8'`` (NNCF, ``[openvino]`` extra) or
    ``'torch-int8'`` (PT2E, x86 Inductor quantizer, ``[torch-int8]`` extra; compiles per
    input shape). These need ``calibration_images``: batches ``(N, C, H, W)`` of real
    training images, preprocessed as the model receives them (a few hundred);
    ``num_threads`` is the ONNX Runtime or OpenVINO threads (default: the runtime's own).

    Returns a module whose ``deploy_model`` holds the fused weights, or for INT8 the
    runtime's model (images in, logits out).
    """
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f'unknown inference backend {backend!r}; choose one of '
                         f'{", ".join(INFERENCE_BACKENDS)}')
    if backend.endswith('-int8') and not calibration_images:
        raise ValueError(f"backend={backend!r} needs calibration_images: a few "
                         'batches (N, C, H, W) of real, preprocessed training images '
                         '(the activation ranges come from them)')
    deploy_model = reparameterize_model(model, inplace)
    if backend.endswith('-int8'):
        return _int8_model(deploy_model, backend, calibration_images, num_threads)
    for param in deploy_model.parameters():
        param.requires_grad_(False)
    deploy_model.to(memory_format=torch.channels_last)
    runner = deploy_model
    if backend == 'compile':
        # freezing: weights become constants, so inductor can pre-pack them for oneDNN.
        runner = torch.compile(deploy_model, options={'freezing': True})
    return _InferenceModel(deploy_model, runner)

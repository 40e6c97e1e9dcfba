"""Export a deployed RepVGG to ONNX, checked by onnx.checker and ONNX Runtime, with the
TorchScript exporter (the dynamo one needs ``onnxscript``; a chain of convs suits it well)."""
import os
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import atomic_output
from .._compat import torchscript_onnx_export
from ..models import RepVGGBlock, reparameterize_model
from .._numerics import max_relative_error
from .._utils import require
from .onnx_runtime import OnnxRuntimeModel

onnx = require('onnx', 'onnx')

DEFAULT_OPSET = 17
# float32 rounding differs between runtimes (summation order); 1e-4 relative is far below
# any difference a wrong graph would make.
ONNX_TOLERANCE = 1e-4


class OnnxExportError(RuntimeError):
    """An export that failed its checks; the message says why. Nothing was written."""


class OnnxExportReport(NamedTuple):
    """What :func:`export_onnx` wrote and its relative error against PyTorch."""
    path: str  # absolute
    input_shape: Sequence[int]
    opset: int
    dynamic_batch: bool
    converted: bool  # train-form blocks were fused first
    max_relative_error: float


class _OutputTensors(nn.Module):
    """The model's outputs as a flat tuple of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # The exporter restores the wrapper's mode afterwards, recursively: keep it eval.
        self.eval()

    def forward(self, images: Tensor):
        outputs = self.model(images)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs, )


def torch_logits(model: nn.Module):
    """The first output of ``model`` as a function of NumPy images ``(N, C, H, W)``."""
    wrapped = _OutputTensors(model)

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapped(torch.from_numpy(images))[0].numpy()
    return logits


def _check_against_onnxruntime(model: nn.Module, path: str,
                               batches: Sequence[Tensor]) -> float:
    """The worst ``max |torch - onnxruntime| / max |torch|`` over image ``batches``, after
    ``onnx.checker``."""
    onnx.checker.check_model(path, full_check=True)
    runtime, wrapped = OnnxRuntimeModel(path), _OutputTensors(model)
    with torch.no_grad():
        return max(max_relative_error(list(wrapped(images)), [
            torch.from_numpy(output) for output in runtime.run(images.numpy())])
            for images in batches)


def export_onnx(model: nn.Module, path: str, input_shape: Sequence[int] = (1, 3, 224, 224),
                dynamic_batch: bool = True, opset: int = DEFAULT_OPSET,
                overwrite: bool = False, tolerance: float = ONNX_TOLERANCE) -> OnnxExportReport:
    """Export the deploy form of ``model`` (fused in a copy; ``forward(images)`` returns a
    tensor or a tuple), traced at ``input_shape`` ``(N, C, H, W)``, to ``path``, atomically,
    once ``onnx.checker`` and ONNX Runtime on random batches (within relative ``tolerance``)
    agree; ``dynamic_batch`` makes the batch dimension symbolic. Raises FileExistsError,
    or OnnxExportError for a failed check (``path`` untouched)."""
    path = os.path.abspath(path)
    converted = any(isinstance(module, RepVGGBlock) and not module.deploy
                    for module in model.modules())
    deploy_model = reparameterize_model(model)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(*input_shape, generator=generator)
    check_batches = [example]
    if dynamic_batch:
        check_batches.append(torch.randn(input_shape[0] + 2, *input_shape[1:],
                                         generator=generator))
    with torch.no_grad():
        num_outputs = len(_OutputTensors(deploy_model)(example))
    output_names = (['output'] if num_outputs == 1 else
                    [f'output_{index}' for index in range(num_outputs)])
    dynamic_axes = ({name: {0: 'batch'} for name in ['input', *output_names]}
                    if dynamic_batch else None)
    with atomic_output(path, overwrite) as temporary_path:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation; see the module docstring.
            warnings.simplefilter('ignore', category=DeprecationWarning)
            warnings.simplefilter('ignore', category=FutureWarning)
            torchscript_onnx_export(_OutputTensors(deploy_model), (example, ), temporary_path,
                                    opset_version=opset, input_names=['input'],
                                    output_names=output_names, dynamic_axes=dynamic_axes)
        relative_error = _check_against_onnxruntime(deploy_model, temporary_path,
                                                    check_batches)
        if not relative_error <= tolerance:
            raise OnnxExportError(f'ONNX Runtime and PyTorch outputs differ by '
                                  f'{relative_error:.2e} (relative, tolerance '
                                  f'{tolerance:.0e}); nothing written')
    return OnnxExportReport(path, tuple(input_shape), opset, dynamic_batch, converted,
                            relative_error)

"""Export a deployed RepVGG to ONNX, checked by onnx.checker and ONNX Runtime.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): the
torch.export-based default needs the ``onnxscript`` package, and a deployed RepVGG (convs,
ReLUs, pooling, a linear head) is exactly what the TorchScript exporter handles well.
"""
import os
import warnings
from typing import List, NamedTuple, Sequence

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
    """What :func:`export_onnx` wrote and checked.

    Attributes:
        path: absolute path of the ONNX file.
        input_shape: ``(N, C, H, W)`` traced; N is symbolic with ``dynamic_batch``.
        opset: ONNX opset version.
        dynamic_batch: whether the batch dimension is symbolic.
        converted: whether train-form blocks were fused before the export.
        max_relative_error: ``max |torch - onnxruntime| / max |torch|`` over the outputs
            for the checked random batches.
    """
    path: str
    input_shape: Sequence[int]
    opset: int
    dynamic_batch: bool
    converted: bool
    max_relative_error: float


class _OutputTensors(nn.Module):
    """Calls the model on one image batch and returns a flat tuple of its tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # The exporter restores the wrapper's mode afterwards, recursively: keep it eval.
        self.eval()

    def forward(self, images: Tensor):
        outputs = self.model(images)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs, )


def torch_logits(model: nn.Module):
    """The first output of ``model`` (eval mode) as a function of images ``(N, C, H, W)``
    float32 NumPy arrays: the PyTorch FP32 reference of a top-1 agreement check."""
    wrapped = _OutputTensors(model)

    def logits(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return wrapped(torch.from_numpy(images))[0].numpy()
    return logits


def check_against_onnxruntime(model: nn.Module, path: str,
                              batches: Sequence[Tensor]) -> float:
    """The worst ``max |torch - onnxruntime| / max |torch|`` over ``batches``.

    Args:
        model: the PyTorch model the file was exported from (eval mode).
        path: the ONNX file, checked with ``onnx.checker`` first.
        batches: image batches ``(N, C, H, W)``.
    """
    onnx.checker.check_model(path, full_check=True)
    runtime = OnnxRuntimeModel(path)
    errors: List[float] = []
    wrapped = _OutputTensors(model)
    for images in batches:
        with torch.no_grad():
            expected = wrapped(images)
        actual = runtime.run(images.numpy())
        errors.append(max_relative_error(list(expected),
                                         [torch.from_numpy(out) for out in actual]))
    return max(errors)


def export_onnx(model: nn.Module,
                path: str,
                input_shape: Sequence[int] = (1, 3, 224, 224),
                dynamic_batch: bool = True,
                opset: int = DEFAULT_OPSET,
                overwrite: bool = False,
                tolerance: float = ONNX_TOLERANCE) -> OnnxExportReport:
    """Export the deploy form of ``model`` to ``path``, verified, written atomically.

    Train-form RepVGG blocks are fused in a copy first (``model`` is not changed). The
    file is written to a temporary name in the destination folder, checked with
    ``onnx.checker`` and against ONNX Runtime on random batches (the traced shape, and a
    batch of 2 more with ``dynamic_batch``), and only then renamed to ``path``.

    Args:
        model: a model holding RepVGG blocks whose ``forward(images)`` returns a tensor
            or a tuple of tensors (mmpretrain classifiers return logits).
        path: the ``.onnx`` file to write.
        input_shape: ``(N, C, H, W)`` to trace with.
        dynamic_batch: make the batch dimension of input and outputs symbolic (the
            default, as timm exports).
        opset: ONNX opset version.
        overwrite: replace an existing ``path``.
        tolerance: largest accepted relative difference between PyTorch and ONNX Runtime.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OnnxExportError: the export failed a check; ``path`` is untouched.
    """
    path = os.path.abspath(path)
    converted = any(isinstance(module, RepVGGBlock) and not module.deploy
                    for module in model.modules())
    deploy_model = reparameterize_model(model)
    batch, channels, height, width = input_shape
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(batch, channels, height, width, generator=generator)
    check_batches = [example]
    if dynamic_batch:
        check_batches.append(torch.randn(batch + 2, channels, height, width,
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
        relative_error = check_against_onnxruntime(deploy_model, temporary_path,
                                                   check_batches)
        if not relative_error <= tolerance:
            raise OnnxExportError(f'ONNX Runtime and PyTorch outputs differ by '
                                  f'{relative_error:.2e} (relative, tolerance '
                                  f'{tolerance:.0e}); nothing written')
    return OnnxExportReport(path, tuple(input_shape), opset, dynamic_batch, converted,
                            relative_error)

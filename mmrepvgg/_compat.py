"""What differs between the torch releases mmrepvgg supports (2.1 and newer), checked by
feature, never by version string."""
import inspect
from types import ModuleType

import torch

from ._utils import MissingExtraError, require


def torchscript_onnx_export(module: torch.nn.Module, args: tuple, path: str, **options) -> None:
    """``torch.onnx.export`` with the TorchScript exporter: newer torch defaults to the
    ``dynamo`` one (needs onnxscript); torch 2.1 has no ``dynamo`` keyword."""
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        options['dynamo'] = False
    torch.onnx.export(module, args, path, **options)


def require_nncf(module: str = 'nncf') -> ModuleType:
    """Import ``module`` of nncf (the openvino extra); MissingExtraError if it is missing or
    torch lacks ``torch.uint16`` (< 2.3), which nncf imports."""
    if not hasattr(torch, 'uint16'):
        raise MissingExtraError(
            f'INT8 with OpenVINO needs torch >= 2.3: nncf imports torch.uint16, which torch '
            f'{torch.__version__} lacks; upgrade torch, or quantize with ONNX Runtime')
    return require(module, 'openvino')

"""What differs between the torch releases mmrepvgg supports (torch 2.1 and newer), checked by
feature, never by version string: one place for each difference."""
import inspect
from types import ModuleType
from typing import Callable

import torch

from ._utils import MissingExtraError, require


def torchscript_onnx_export(module: torch.nn.Module, args: tuple, path: str, **options) -> None:
    """``torch.onnx.export`` with the TorchScript-based exporter on every supported torch.

    Newer torch chooses between two exporters with a ``dynamo`` keyword (and defaults to the
    torch.export-based one, which needs ``onnxscript``); torch 2.1's ``export`` has no such
    keyword and is the TorchScript exporter. ``options`` are ``torch.onnx.export``'s own
    (``opset_version``, ``input_names``, ``output_names``, ``dynamic_axes``).
    """
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        options['dynamo'] = False
    torch.onnx.export(module, args, path, **options)


def register_load_state_dict_pre_hook(module: torch.nn.Module, hook: Callable) -> None:
    """``module.register_load_state_dict_pre_hook(hook)``: ``hook(module, state_dict, prefix,
    local_metadata, strict, missing_keys, unexpected_keys, error_msgs)`` runs before
    ``load_state_dict`` reads ``state_dict``. Older torch (2.1) has only the private method,
    which calls the hook with the same arguments when asked ``with_module=True``."""
    if hasattr(module, 'register_load_state_dict_pre_hook'):
        module.register_load_state_dict_pre_hook(hook)
    else:
        module._register_load_state_dict_pre_hook(hook, with_module=True)


def require_nncf(module: str = 'nncf') -> ModuleType:
    """Import ``module`` of nncf, the openvino extra's quantizer.

    Raises:
        MissingExtraError: nncf is not installed, or this torch lacks ``torch.uint16``, which
            nncf's torch backend maps its dtypes to on import (torch >= 2.3); one line.
    """
    if not hasattr(torch, 'uint16'):
        raise MissingExtraError(
            f'INT8 with OpenVINO needs torch >= 2.3: nncf imports torch.uint16, which torch '
            f'{torch.__version__} lacks; upgrade torch, or quantize with ONNX Runtime')
    return require(module, 'openvino')

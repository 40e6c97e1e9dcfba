"""What differs between the torch releases mmrepvgg supports (torch 2.1 and newer), checked by
feature, never by version string: one place for each difference."""
import inspect

import torch


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

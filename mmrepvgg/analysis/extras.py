"""Optional dependencies, imported lazily with a one-line fix when they are missing."""
import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the pip extra to install."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming ``mmrepvgg[extra]``.

    Example: ``onnxruntime = require('onnxruntime', 'onnx')``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise MissingExtraError(
            f'{module} is not installed (needed for this command); install it with '
            f"pip install 'mmrepvgg[{extra}]'") from error

"""Optional dependencies, imported when a feature first needs them."""
import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (e.g. ``'sklearn.datasets'``), an optional dependency installed by
    ``pip install "mmrepvgg[<extra>]"``.

    Raises:
        MissingExtraError: ``module`` cannot be imported; one line naming the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f'{module} is not installed ({error}); install the optional dependencies with '
            f'pip install "mmrepvgg[{extra}]"') from error

"""Optional dependencies, imported when a feature first needs them; the torch thread
count held for a block of work."""
import contextlib
import importlib
from types import ModuleType
from typing import Iterator, Optional

import torch


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


@contextlib.contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (unchanged for None), then give
    the process back the count it had."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

"""The torch thread count for a block of measurements, given back afterwards."""
import contextlib
from typing import Iterator, Optional

import torch


@contextlib.contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run the block with ``count`` torch threads (unchanged for None), then restore."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

"""Optional dependencies imported on first need, the global random generators kept as they
were, and the input sizes and counts the tools accept."""
import argparse
import contextlib
import importlib
import random
from types import ModuleType
from typing import Callable, Iterator

import numpy as np
import torch

# RepVGG downsamples 32x; past 4096 pixels a side, a tool's input only exhausts memory.
MIN_INPUT_SIDE, MAX_INPUT_SIDE = 32, 4096
# Counts the tools' options accept: images in one forward pass (1024 ImageNet-size images
# are 0.6 GB of input), images of a dataset to use, CPU threads.
MAX_BATCH_IMAGES, MAX_DATASET_IMAGES, MAX_THREADS = 1024, 10**7, 1024


def input_shape_problem(option: str, height: int, width: int) -> str:
    """The error line for ``option height width`` (pixels) as an input size, ``''`` if fine."""
    if MIN_INPUT_SIDE <= min(height, width) and max(height, width) <= MAX_INPUT_SIDE:
        return ''
    return (f'{option} {height} {width}: RepVGG downsamples 32x and larger inputs only '
            f'exhaust memory; pass a height and width from {MIN_INPUT_SIDE} to '
            f'{MAX_INPUT_SIDE}')


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``, else one error line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f'{value}: pass {low} to {high}')
        return value
    parse.__name__ = 'integer'  # what argparse's messages call the type
    return parse


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` of the ``extra``; :class:`MissingExtraError` names the extra if not."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f'{module} is not installed ({error}); install the optional dependencies with '
            f'pip install "mmrepvgg[{extra}]"') from error


@contextlib.contextmanager
def global_rngs_kept() -> Iterator[None]:
    """Give Python's, numpy's and torch's CPU global generators their states back after the
    block, so that a library call does not shift the caller's random numbers."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

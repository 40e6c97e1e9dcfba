"""scikit-learn's handwritten digits (1,797 real 8x8 grey images, 10 classes, no download),
written once in the layout of mmpretrain's ``CustomDataset``: ``data_root/{train,val}/<digit>/
digit_<index>.png``."""
import os
import shutil
import tempfile
from typing import Callable, NamedTuple, Tuple

import numpy as np
from PIL import Image

from .._utils import require

DIGITS_CLASSES = tuple(str(digit) for digit in range(10))
# scikit-learn's pixels are ink counts 0..16; PNGs hold 0..255.
DIGITS_MAX_VALUE = 16
VAL_FRACTION = 0.2
SPLIT_SEED = 0


class _PreparedSplit(NamedTuple):
    data_root: str
    num_train: int
    num_val: int
    created: bool


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int):
    """A stratified split, the same on every machine for a given seed."""
    train_test_split = require('sklearn.model_selection', 'demo').train_test_split
    train_indices, val_indices = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train_indices), np.sort(val_indices)


def _grey_png(pixels: np.ndarray) -> Image.Image:
    """A digit's ink counts ``(H, W)`` as a grey image."""
    return Image.fromarray(np.rint(pixels * (255 / DIGITS_MAX_VALUE)).astype(np.uint8), 'L')


def _count_pngs(folder: str) -> int:
    return sum(name.endswith('.png') for _, _, names in os.walk(folder) for name in names)


def _prepare(data_root: str, folders: Tuple[str, str], expected: Tuple[int, int],
             write: Callable[[str], None], name: str) -> _PreparedSplit:
    """Check ``expected`` PNG counts under ``data_root``'s train and val ``folders``, or
    ``write`` a temporary sibling renamed to ``data_root``: it appears complete or not at all."""
    if os.path.exists(data_root):
        counts = tuple(_count_pngs(os.path.join(data_root, folder)) for folder in folders)
        if counts != expected:
            raise FileExistsError(
                f'{data_root} exists but is not the {name} (expected {expected[0]} and '
                f'{expected[1]} PNG files under {folders[0]}/ and {folders[1]}/, found '
                f'{counts[0]} and {counts[1]}); remove it or pick another data_root')
        return _PreparedSplit(data_root, *counts, created=False)
    parent = os.path.dirname(os.path.abspath(data_root))
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(data_root)}.')
    try:
        write(staging_root)
        os.rename(staging_root, data_root)
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise
    return _PreparedSplit(data_root, *expected, created=True)


def prepare_digits(data_root: str = 'data/digits',
                   val_fraction: float = VAL_FRACTION,
                   seed: int = SPLIT_SEED) -> _PreparedSplit:
    """Write the digits into ``data_root`` once, ``val_fraction`` of each class held out for
    ``val`` (0.2: 1,437 train / 360 val images); later calls only check what is there.
    Raises MissingExtraError without scikit-learn, FileExistsError for another ``data_root``.
    """
    digits = require('sklearn.datasets', 'demo').load_digits()
    splits = dict(zip(('train', 'val'), _split_indices(digits.target, val_fraction, seed)))

    def write(root: str) -> None:
        for split, indices in splits.items():
            for index in indices:
                folder = os.path.join(root, split, str(int(digits.target[index])))
                os.makedirs(folder, exist_ok=True)
                _grey_png(digits.images[index]).save(
                    os.path.join(folder, f'digit_{index:04d}.png'))

    expected = tuple(len(indices) for indices in splits.values())
    return _prepare(data_root, ('train', 'val'), expected, write,
                    'digits data set of this split')

"""scikit-learn's handwritten digits, written once as a small ImageNet-layout data set.

The 1,797 real 8x8 grey images (10 classes) ship inside scikit-learn, so the embedded demo
needs no download. :func:`prepare_digits` writes them in the one-folder-per-class layout
that mmpretrain's ``CustomDataset`` reads, the layout of the fine-tuning template
(configs/finetune/, docs/finetune.md)::

    data_root/
    ├── train/<digit>/digit_0000.png ...
    └── val/<digit>/digit_0005.png ...
"""
import os
import shutil
import tempfile
from typing import NamedTuple

import numpy as np
from PIL import Image

from .._utils import require

DIGITS_CLASSES = tuple(str(digit) for digit in range(10))
# Pixel values in scikit-learn's digits are ink counts 0..16 (a 4x4 block of a 32x32
# bitmap); PNGs hold 0..255.
DIGITS_MAX_VALUE = 16
VAL_FRACTION = 0.2
SPLIT_SEED = 0


class DigitsSplit(NamedTuple):
    """What :func:`prepare_digits` found or wrote."""
    data_root: str
    num_train: int
    num_val: int
    created: bool


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int):
    """A fixed stratified split: the same indices on every machine for a given seed."""
    train_test_split = require('sklearn.model_selection', 'demo').train_test_split
    indices = np.arange(len(labels))
    train_indices, val_indices = train_test_split(
        indices, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train_indices), np.sort(val_indices)


def _count_images(split_root: str) -> int:
    """PNG files in the class folders of ``split_root`` (0 if it does not exist)."""
    class_folders = [os.path.join(split_root, digit) for digit in DIGITS_CLASSES]
    return sum(file_name.endswith('.png') for folder in class_folders
               if os.path.isdir(folder) for file_name in os.listdir(folder))


def _write_split(root: str, split: str, images: np.ndarray, labels: np.ndarray,
                 indices: np.ndarray) -> None:
    for index in indices:
        image_path = os.path.join(root, split, str(int(labels[index])),
                                  f'digit_{index:04d}.png')
        os.makedirs(os.path.dirname(image_path), exist_ok=True)
        pixels = np.rint(images[index] * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)
        Image.fromarray(pixels, mode='L').save(image_path)


def prepare_digits(data_root: str = 'data/digits',
                   val_fraction: float = VAL_FRACTION,
                   seed: int = SPLIT_SEED) -> DigitsSplit:
    """Write the digits into ``data_root`` once; later calls only check what is there.

    The folder appears complete or not at all: the files are written into a temporary
    sibling folder which is then renamed to ``data_root``.

    Args:
        data_root: the folder to create. Defaults to ``'data/digits'``.
        val_fraction: share of each class held out for ``val``. Defaults to 0.2
            (1,437 train / 360 val images).
        seed: seed of the stratified split. Defaults to 0.

    Returns:
        The split sizes and whether this call wrote the files.

    Raises:
        MissingExtraError: scikit-learn is not installed (the ``demo`` extra).
        FileExistsError: ``data_root`` exists but is not a digits data set of this split
            (the message says to remove it or choose another folder).
    """
    digits = require('sklearn.datasets', 'demo').load_digits()
    train_indices, val_indices = _split_indices(digits.target, val_fraction, seed)
    if os.path.exists(data_root):
        counts = tuple(_count_images(os.path.join(data_root, split))
                       for split in ('train', 'val'))
        if counts != (len(train_indices), len(val_indices)):
            raise FileExistsError(
                f'{data_root} exists but is not the digits data set of this split '
                f'(expected {len(train_indices)} and {len(val_indices)} PNG files in '
                'train/<digit>/ and val/<digit>/); remove it or pick another data_root')
        return DigitsSplit(data_root, *counts, created=False)

    parent = os.path.dirname(os.path.abspath(data_root))
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(data_root)}.')
    try:
        _write_split(staging_root, 'train', digits.images, digits.target, train_indices)
        _write_split(staging_root, 'val', digits.images, digits.target, val_indices)
        os.rename(staging_root, data_root)
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise
    return DigitsSplit(data_root, len(train_indices), len(val_indices), created=True)

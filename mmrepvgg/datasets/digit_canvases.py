"""scikit-learn's handwritten digits pasted onto larger canvases: a small semantic
segmentation set (a mask per digit class) and a detection set (a box per digit), offline.

Each canvas is ``CANVAS_SIZE`` pixels square, black, with one to ``MAX_DIGITS_PER_CANVAS``
real 8x8 digits enlarged (bilinear) to 16-24 pixels, each in its own quadrant so that
they never overlap. Train canvases use only the train digits of
:func:`mmrepvgg.datasets.digits.prepare_digits`' split, val canvases only the val digits.
:func:`prepare_digit_canvases` writes, in the layouts mmseg's ``BaseSegDataset`` and
mmdet's ``CocoDataset`` read::

    data_root/
    ├── images/{train,val}/canvas_0000.png   grey canvases
    ├── masks/{train,val}/canvas_0000.png    0 background, 1 + digit where the ink is
    └── annotations/{train,val}.json         COCO boxes (x, y, w, h) of the ink, category = digit
"""
import json
import os
import shutil
import tempfile
from typing import NamedTuple

import numpy as np
from PIL import Image

from .._utils import require
from .digits import DIGITS_CLASSES, DIGITS_MAX_VALUE, SPLIT_SEED, VAL_FRACTION, _split_indices

CANVAS_SIZE = 64  # pixels; four 32x32 quadrants, one digit at most in each
MAX_DIGITS_PER_CANVAS = 3
DIGIT_SIZES = (16, 20, 24)  # pixels, the enlarged digit's side
# A pixel is ink (masked, inside the box) from this grey level on (0-255): a quarter of
# the full 16 ink counts of scikit-learn's digits.
INK_THRESHOLD = 64
SEGMENTATION_CLASSES = ('background', ) + DIGITS_CLASSES
SPLITS = ('train', 'val')


class CanvasSplit(NamedTuple):
    """What :func:`prepare_digit_canvases` found or wrote."""
    data_root: str
    num_train: int
    num_val: int
    created: bool


def _paste_canvas(digit_images: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """One canvas ``(CANVAS_SIZE, CANVAS_SIZE)`` uint8, its mask, and its COCO boxes."""
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), np.uint8)
    mask = np.zeros_like(canvas)
    boxes = []
    quadrant_size = CANVAS_SIZE // 2
    num_digits = int(rng.integers(1, MAX_DIGITS_PER_CANVAS + 1))
    quadrants = rng.permutation(4)[:num_digits]
    for quadrant, index in zip(quadrants.tolist(), rng.integers(0, len(labels), num_digits)):
        size = int(rng.choice(DIGIT_SIZES))
        pixels = np.rint(digit_images[index] * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)
        digit = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR))
        top = quadrant // 2 * quadrant_size + int(rng.integers(0, quadrant_size - size + 1))
        left = quadrant % 2 * quadrant_size + int(rng.integers(0, quadrant_size - size + 1))
        canvas[top:top + size, left:left + size] = digit
        ink_rows, ink_cols = np.nonzero(digit >= INK_THRESHOLD)
        mask[top + ink_rows, left + ink_cols] = 1 + int(labels[index])
        x1, y1 = left + int(ink_cols.min()), top + int(ink_rows.min())
        x2, y2 = left + int(ink_cols.max()) + 1, top + int(ink_rows.max()) + 1
        boxes.append(dict(bbox=[x1, y1, x2 - x1, y2 - y1], category_id=int(labels[index])))
    return canvas, mask, boxes


def _write_split(root: str, split: str, num_canvases: int, digit_images: np.ndarray,
                 labels: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    for folder in ('images', 'masks'):
        os.makedirs(os.path.join(root, folder, split))
    images, annotations = [], []
    for image_id in range(num_canvases):
        canvas, mask, boxes = _paste_canvas(digit_images, labels, rng)
        file_name = f'canvas_{image_id:04d}.png'
        Image.fromarray(canvas, mode='L').save(os.path.join(root, 'images', split, file_name))
        Image.fromarray(mask, mode='L').save(os.path.join(root, 'masks', split, file_name))
        images.append(dict(id=image_id, file_name=file_name, width=CANVAS_SIZE,
                           height=CANVAS_SIZE))
        for box in boxes:
            annotations.append(dict(box, id=len(annotations), image_id=image_id, iscrowd=0,
                                    area=box['bbox'][2] * box['bbox'][3]))
    categories = [dict(id=digit, name=name) for digit, name in enumerate(DIGITS_CLASSES)]
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    with open(os.path.join(root, 'annotations', f'{split}.json'), 'w') as stream:
        json.dump(dict(images=images, annotations=annotations, categories=categories), stream)


def _count_canvases(data_root: str, split: str) -> int:
    folder = os.path.join(data_root, 'images', split)
    return sum(name.endswith('.png') for name in os.listdir(folder)) \
        if os.path.isdir(folder) else 0


def prepare_digit_canvases(data_root: str = 'data/digit_canvases',
                           num_train: int = 800,
                           num_val: int = 200,
                           seed: int = SPLIT_SEED) -> CanvasSplit:
    """Write the canvases into ``data_root`` once; later calls only check what is there.

    The folder appears complete or not at all (written in a temporary sibling, then
    renamed).

    Args:
        data_root: the folder to create.
        num_train, num_val: canvases per split.
        seed: seed of the digit split and of the pasting.

    Raises:
        MissingExtraError: scikit-learn is not installed (the ``demo`` extra).
        FileExistsError: ``data_root`` exists with other canvas counts (remove it or
            choose another folder).
    """
    digits = require('sklearn.datasets', 'demo').load_digits()
    if os.path.exists(data_root):
        counts = tuple(_count_canvases(data_root, split) for split in SPLITS)
        if counts != (num_train, num_val):
            raise FileExistsError(
                f'{data_root} exists but does not hold {num_train} train and {num_val} val '
                f'canvases under images/{{train,val}}/ (found {counts[0]} and {counts[1]}); '
                'remove it or pick another data_root')
        return CanvasSplit(data_root, *counts, created=False)
    split_indices = _split_indices(digits.target, VAL_FRACTION, seed)
    parent = os.path.dirname(os.path.abspath(data_root))
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(data_root)}.')
    try:
        for split, count, indices in zip(SPLITS, (num_train, num_val), split_indices):
            _write_split(staging_root, split, count, digits.images[indices],
                         digits.target[indices], seed)
        os.rename(staging_root, data_root)
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise
    return CanvasSplit(data_root, num_train, num_val, created=True)

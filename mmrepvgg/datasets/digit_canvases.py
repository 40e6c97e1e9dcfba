"""Offline segmentation and detection data: one to three scikit-learn digits enlarged on a
black canvas: ``images/{train,val}/canvas_<n>.png``, ``masks/`` (0 background, 1 + digit on
the ink) and ``annotations/{train,val}.json`` (COCO boxes of the ink)."""
import json
import os

import numpy as np
from PIL import Image

from .._utils import require
from .digits import (DIGITS_CLASSES, SPLIT_SEED, VAL_FRACTION, _grey_png, _prepare,
                     _PreparedSplit, _split_indices)

CANVAS_SIZE = 64  # pixels; four 32x32 quadrants, one digit at most in each
MAX_DIGITS_PER_CANVAS = 3
DIGIT_SIZES = (16, 20, 24)  # pixels, the enlarged digit's side
# Ink (masked, inside the box) from this grey level (0-255) on: a quarter of full ink.
INK_THRESHOLD = 64
SPLITS = ('train', 'val')


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
        digit = np.asarray(_grey_png(digit_images[index]).resize((size, size), Image.BILINEAR))
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


def prepare_digit_canvases(data_root: str = 'data/digit_canvases',
                           num_train: int = 800,
                           num_val: int = 200,
                           seed: int = SPLIT_SEED) -> _PreparedSplit:
    """Write the canvases into ``data_root`` once (train ones from the train digits only);
    later calls only check what is there. Raises as :func:`.digits.prepare_digits`."""
    digits = require('sklearn.datasets', 'demo').load_digits()
    split_indices = _split_indices(digits.target, VAL_FRACTION, seed)

    def write(root: str) -> None:
        for split, count, indices in zip(SPLITS, (num_train, num_val), split_indices):
            _write_split(root, split, count, digits.images[indices], digits.target[indices],
                         seed)

    return _prepare(data_root, ('images/train', 'images/val'), (num_train, num_val), write,
                    'digit canvases data set')

"""Natural photos that ship inside installed packages, cut into labelled crops: a harder
data set than the digits that still needs no download.

Twelve photos, one class each (scikit-image's bundled samples, scikit-learn's two sample
images, matplotlib's Grace Hopper). Each photo is split into two side-by-side regions:
training crops come from its left two thirds, validation crops from its right third, so
a validation crop shows parts of the photo no training crop showed. Every crop is a
square of a random scale of its region (:data:`CROP_SCALES`), at a random position,
flipped left-right half of the time, with brightness, contrast and saturation jittered,
saved as a ``CROP_SIZE`` RGB PNG. The draw is seeded: the same crops on every machine.
:func:`prepare_photos` writes them in the one-folder-per-class layout of
``CustomDataset`` (as :mod:`mmrepvgg.datasets.digits` does)::

    data_root/
    ├── train/<photo>/crop_0000.png ...
    └── val/<photo>/crop_0000.png ...
"""
import os
from typing import Callable, Dict

import numpy as np
from PIL import Image, ImageEnhance

from mmrepvgg._utils import require
from mmrepvgg.datasets.digits import _prepare


def _skimage(name: str) -> Callable[[], np.ndarray]:
    return lambda: getattr(require('skimage.data', 'photos'), name)()


def _sklearn(file_name: str) -> Callable[[], np.ndarray]:
    return lambda: require('sklearn.datasets', 'photos').load_sample_image(file_name)


def _grace_hopper() -> np.ndarray:
    sample = require('matplotlib.cbook', 'photos').get_sample_data('grace_hopper.jpg')
    with Image.open(sample) as image:
        return np.asarray(image.convert('RGB'))


# class name -> a function returning the photo (H, W) or (H, W, 3), uint8 or bool.
PHOTO_SOURCES: Dict[str, Callable[[], np.ndarray]] = {
    'astronaut': _skimage('astronaut'),
    'camera': _skimage('camera'),
    'chelsea': _skimage('chelsea'),
    'coffee': _skimage('coffee'),
    'rocket': _skimage('rocket'),
    'horse': _skimage('horse'),
    'motorcycle': lambda: require('skimage.data', 'photos').stereo_motorcycle()[0],
    'hubble_deep_field': _skimage('hubble_deep_field'),
    'retina': _skimage('retina'),
    'china': _sklearn('china.jpg'),
    'flower': _sklearn('flower.jpg'),
    'grace_hopper': _grace_hopper,
}
PHOTO_CLASSES = tuple(PHOTO_SOURCES)
CROP_SIZE = 64  # pixels, square
CROP_SCALES = (0.3, 0.5, 0.8)  # crop side / the shorter side of its region
JITTER = 0.25  # brightness, contrast and saturation factors drawn from 1 +- JITTER
TRAIN_PER_CLASS, VAL_PER_CLASS = 240, 80
SPLIT_SEED = 0
TRAIN_SHARE = 2 / 3  # of each photo's width: the training region (left)


def photo_rgb(name: str) -> Image.Image:
    """The photo of class ``name`` as an RGB image (grey and binary ones replicated)."""
    pixels = np.asarray(PHOTO_SOURCES[name]())
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    return Image.fromarray(pixels).convert('RGB')


def random_crop(region: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One jittered square crop of ``region``, resized to :data:`CROP_SIZE`."""
    side = max(8, int(CROP_SCALES[rng.integers(len(CROP_SCALES))] * min(region.size)))
    left = int(rng.integers(region.width - side + 1))
    top = int(rng.integers(region.height - side + 1))
    crop = region.crop((left, top, left + side, top + side)).resize(
        (CROP_SIZE, CROP_SIZE), Image.BICUBIC)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        crop = enhancer(crop).enhance(float(rng.uniform(1 - JITTER, 1 + JITTER)))
    return crop


def _write_crops(root: str, seed: int) -> None:
    for class_index, name in enumerate(PHOTO_CLASSES):
        photo = photo_rgb(name)
        split_x = int(photo.width * TRAIN_SHARE)
        regions = dict(train=photo.crop((0, 0, split_x, photo.height)),
                       val=photo.crop((split_x, 0, photo.width, photo.height)))
        for split, count in (('train', TRAIN_PER_CLASS), ('val', VAL_PER_CLASS)):
            rng = np.random.default_rng([seed, class_index, split == 'val'])
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for index in range(count):
                random_crop(regions[split], rng).save(
                    os.path.join(folder, f'crop_{index:04d}.png'))


def prepare_photos(data_root: str = 'data/photos', seed: int = SPLIT_SEED):
    """Write the photo crops (2,880 train / 960 val) into ``data_root`` once, seeded with
    ``seed``; later calls only check what is there (as
    :func:`mmrepvgg.datasets.prepare_digits`).

    Raises:
        MissingExtraError: scikit-image, scikit-learn or matplotlib is missing (the
            ``photos`` extra).
        FileExistsError: ``data_root`` exists but does not hold these crops.
    """
    def write(root: str) -> None:
        for module in ('skimage.data', 'sklearn.datasets', 'matplotlib.cbook'):
            require(module, 'photos')  # a missing package fails before any crop is cut
        _write_crops(root, seed)

    expected = (TRAIN_PER_CLASS * len(PHOTO_CLASSES), VAL_PER_CLASS * len(PHOTO_CLASSES))
    return _prepare(data_root, ('train', 'val'), expected, write, 'photos data set')

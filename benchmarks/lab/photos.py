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
import shutil
import tempfile
from typing import Callable, Dict, NamedTuple

import numpy as np
from PIL import Image, ImageEnhance

from mmrepvgg._utils import require


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


class PhotosSplit(NamedTuple):
    """What :func:`prepare_photos` found or wrote."""
    data_root: str
    num_train: int
    num_val: int
    created: bool


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


def _count_images(split_root: str) -> int:
    return sum(file_name.endswith('.png') for name in PHOTO_CLASSES
               if os.path.isdir(os.path.join(split_root, name))
               for file_name in os.listdir(os.path.join(split_root, name)))


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


def prepare_photos(data_root: str = 'data/photos', seed: int = SPLIT_SEED) -> PhotosSplit:
    """Write the photo crops into ``data_root`` once; later calls only check what is
    there. The folder appears complete or not at all (written into a temporary sibling,
    then renamed).

    Args:
        data_root: the folder to create. Defaults to ``'data/photos'``.
        seed: seed of the crops. Defaults to 0.

    Returns:
        The split sizes (2,880 train / 960 val crops) and whether this call wrote them.

    Raises:
        MissingExtraError: scikit-image, scikit-learn or matplotlib is missing (the
            ``photos`` extra).
        FileExistsError: ``data_root`` exists but does not hold these crops (the message
            says to remove it or choose another folder).
    """
    expected = (TRAIN_PER_CLASS * len(PHOTO_CLASSES), VAL_PER_CLASS * len(PHOTO_CLASSES))
    if os.path.exists(data_root):
        counts = tuple(_count_images(os.path.join(data_root, split))
                       for split in ('train', 'val'))
        if counts != expected:
            raise FileExistsError(
                f'{data_root} exists but is not the photos data set (expected '
                f'{expected[0]} and {expected[1]} PNG files in train/<photo>/ and '
                'val/<photo>/); remove it or pick another data_root')
        return PhotosSplit(data_root, *counts, created=False)
    for module in ('skimage.data', 'sklearn.datasets', 'matplotlib.cbook'):
        require(module, 'photos')  # a missing package fails before anything is written
    parent = os.path.dirname(os.path.abspath(data_root))
    os.makedirs(parent, exist_ok=True)
    staging_root = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(data_root)}.')
    try:
        _write_crops(staging_root, seed)
        os.rename(staging_root, data_root)
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise
    return PhotosSplit(data_root, *expected, created=True)

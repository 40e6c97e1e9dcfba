"""The photos data set: crops of photos shipped inside installed packages, written once,
with a split in which no validation crop shows what a training crop showed."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from lab import photos
from mmrepvgg._utils import MissingExtraError


@pytest.fixture
def two_colour_photos(monkeypatch):
    """Two synthetic 'photos': red left two thirds and blue right third (class a), and
    the same in green/white (class b); 3 train and 2 val crops each."""
    def photo(left, right):
        pixels = np.zeros((90, 150, 3), np.uint8)
        pixels[:, :100], pixels[:, 100:] = left, right
        return lambda: pixels
    monkeypatch.setattr(photos, 'PHOTO_SOURCES', {
        'a': photo((255, 0, 0), (0, 0, 255)), 'b': photo((0, 255, 0), (255, 255, 255))})
    monkeypatch.setattr(photos, 'PHOTO_CLASSES', ('a', 'b'))
    monkeypatch.setattr(photos, 'TRAIN_PER_CLASS', 3)
    monkeypatch.setattr(photos, 'VAL_PER_CLASS', 2)


def _pixels(path):
    return np.asarray(Image.open(path))


def test_train_crops_come_from_the_left_and_val_crops_from_the_right(
        two_colour_photos, tmp_path):
    split = photos.prepare_photos(str(tmp_path / 'photos'))
    assert split == (str(tmp_path / 'photos'), 6, 2 * 2, True)
    for name, train_colour, val_colour in (('a', 0, 2), ('b', 1, None)):
        for index in range(3):
            crop = _pixels(tmp_path / 'photos' / 'train' / name / f'crop_{index:04d}.png')
            assert crop.shape == (64, 64, 3)
            assert crop[..., train_colour].mean() > 100  # jittered, but still that colour
        val_crop = _pixels(tmp_path / 'photos' / 'val' / name / 'crop_0000.png')
        if val_colour is not None:
            assert val_crop[..., val_colour].mean() > 100 and val_crop[..., 0].mean() < 60
        else:  # white: every channel high
            assert val_crop.min() > 100


def test_the_crops_are_the_same_on_every_run_and_the_folder_is_kept(
        two_colour_photos, tmp_path):
    first, second = (photos.prepare_photos(str(tmp_path / name)) for name in ('1', '2'))
    assert first.created and second.created
    for split, name, index in (('train', 'a', 2), ('val', 'b', 1)):
        files = [tmp_path / root / split / name / f'crop_{index:04d}.png' for root in '12']
        assert files[0].read_bytes() == files[1].read_bytes()
    assert photos.prepare_photos(str(tmp_path / '1')).created is False


def test_a_folder_that_is_not_the_data_set_is_refused_untouched(two_colour_photos, tmp_path):
    (tmp_path / 'photos').mkdir()
    (tmp_path / 'photos' / 'mine.txt').write_text('keep')
    with pytest.raises(FileExistsError, match='remove it or pick another data_root'):
        photos.prepare_photos(str(tmp_path / 'photos'))
    assert os.listdir(tmp_path / 'photos') == ['mine.txt']


def test_missing_scikit_image_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'skimage.data', None)  # import fails as if absent
    with pytest.raises(MissingExtraError, match=r'mmrepvgg\[photos\]'):
        photos.prepare_photos(str(tmp_path / 'photos'))
    assert not os.listdir(tmp_path)


def test_every_photo_ships_with_the_installed_packages():
    pytest.importorskip('skimage')  # the [photos] extra (requirements/tests.txt)
    sizes = {name: photos.photo_rgb(name).size for name in photos.PHOTO_CLASSES}
    assert len(sizes) == 12 and all(min(size) >= 256 for size in sizes.values())
    assert photos.photo_rgb('camera').mode == 'RGB'  # a grey photo, replicated

"""The digit-canvas data of the dense-prediction example, and a shortened run of
tools/dense_demo.py (train, test, convert, test the deploy form, for both tasks)."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from mmrepvgg.datasets import prepare_digit_canvases
from mmrepvgg.datasets.digit_canvases import CANVAS_SIZE, INK_THRESHOLD


def test_canvas_masks_boxes_and_images_describe_the_same_digits(tmp_path):
    root = tmp_path / 'canvases'
    assert prepare_digit_canvases(str(root), num_train=6, num_val=3).created
    annotations = json.loads((root / 'annotations' / 'val.json').read_text())
    assert [image['file_name'] for image in annotations['images']] == \
        [f'canvas_{index:04d}.png' for index in range(3)]
    for image in annotations['images']:
        pixels = np.asarray(Image.open(root / 'images' / 'val' / image['file_name']))
        mask = np.asarray(Image.open(root / 'masks' / 'val' / image['file_name']))
        assert pixels.shape == mask.shape == (CANVAS_SIZE, CANVAS_SIZE)
        np.testing.assert_array_equal(mask > 0, pixels >= INK_THRESHOLD)
        covered = np.zeros_like(mask, dtype=bool)
        for box in (box for box in annotations['annotations']
                    if box['image_id'] == image['id']):
            x, y, width, height = box['bbox']
            inside = mask[y:y + height, x:x + width]
            assert (inside == 1 + box['category_id']).any(axis=0).all()  # tight: ink in
            assert (inside == 1 + box['category_id']).any(axis=1).all()  # every row/col
            covered[y:y + height, x:x + width] = True
        assert not (mask > 0)[~covered].any()


def test_canvases_are_written_once_and_another_folder_is_refused(tmp_path):
    root = tmp_path / 'canvases'
    prepare_digit_canvases(str(root), num_train=4, num_val=2)
    assert not prepare_digit_canvases(str(root), num_train=4, num_val=2).created
    with pytest.raises(FileExistsError, match='remove it or pick another data_root'):
        prepare_digit_canvases(str(root), num_train=5, num_val=2)
    assert len(list((root / 'images' / 'train').iterdir())) == 4


@pytest.mark.slow
def test_shortened_demo_prints_equal_train_and_deploy_metrics(tmp_path, capsys):
    demo = load_tool('tools/dense_demo.py')
    assert demo.main(['--work-dir', str(tmp_path / 'work'), '--data-root',
                      str(tmp_path / 'data'), '--num-train', '32', '--num-val', '8',
                      '--seg-iters', '4', '--det-epochs', '1', '--benchmark-batch', '2']) == 0
    output = capsys.readouterr().out
    rows = {match[0]: (float(match[1]), float(match[2])) for match in re.findall(
        r'^(segmentation|detection) .*?(\d+\.\d+)\s+(\d+\.\d+)\s+\d+\.\d+x', output, re.M)}
    assert set(rows) == {'segmentation', 'detection'}
    assert all(train == deploy for train, deploy in rows.values())
    assert output.count('max relative error train vs deploy') == 2

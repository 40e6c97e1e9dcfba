"""tools/image_demo.py on digits PNG files with the session's digits model: it labels
images with the digit classes, and its top-1 over the val images is tools/test.py's."""
import json
import os
import struct
import zlib

import pytest
from mmengine.registry import DefaultScope
from PIL import Image

from mmrepvgg.apis import get_model, inference_model
from mmrepvgg.apis.image_classification import list_images
from mmrepvgg.datasets import DIGITS_CLASSES
from mmrepvgg.engine import run_test
from lab.threads import torch_threads

from conftest import REPO_ROOT, load_tool

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs', 'digits', 'repvgg-A0_digits.py')
image_demo = load_tool('tools/image_demo.py')


@pytest.fixture(scope='session')
def digits_checkpoint(digits_train_checkpoint):
    return digits_train_checkpoint


def run_image_demo(*args: str, capsys) -> tuple:
    with torch_threads(1):  # as run_test below: the same kernels, the same predictions
        return_code = image_demo.main(list(args))
    output = capsys.readouterr()
    return return_code, output.out, output.err


def test_image_demo_labels_digits_and_its_top1_is_tools_test_top1(
        digits_workspace, digits_checkpoint, tmp_path, capsys):
    val_root = str(digits_workspace / 'data' / 'digits' / 'val')
    out = str(tmp_path / 'results.json')
    return_code, output, errors = run_image_demo(
        val_root, DIGITS_CONFIG, digits_checkpoint, '--topk', '3', '--out', out,
        capsys=capsys)
    assert (return_code, errors) == (0, '')
    assert output.startswith(f'notice: {digits_checkpoint} holds the train form; fused its 22 ')
    with open(out) as stream:
        records = json.load(stream)
    assert [record['image'] for record in records] == list_images(val_root)
    assert all(len(record['topk']) == 3 for record in records)
    assert {entry['class'] for record in records for entry in record['topk']} <= \
        set(DIGITS_CLASSES)
    correct = sum(record['topk'][0]['class'] == os.path.basename(os.path.dirname(
        record['image'])) for record in records)
    demo_top1 = 100 * correct / len(records)

    with torch_threads(1):
        metrics = run_test(DIGITS_CONFIG, digits_checkpoint, work_dir=str(tmp_path / 'test'),
                           cfg_options={'test_dataloader.dataset.data_root': str(
                               digits_workspace / 'data' / 'digits')})
    # By class name here, by label index in the Runner's evaluator: equal only if the
    # names are the right way round (for a model whose predictions vary).
    assert len({record['topk'][0]['class'] for record in records}) >= 3
    assert demo_top1 == pytest.approx(metrics['accuracy/top1'], abs=1e-3)


def test_image_demo_classifies_one_image_and_names_its_class(digits_workspace,
                                                             digits_checkpoint, capsys):
    image = list_images(str(digits_workspace / 'data' / 'digits' / 'val' / '7'))[0]
    return_code, output, _ = run_image_demo(image, DIGITS_CONFIG, digits_checkpoint,
                                            '--topk', '1', capsys=capsys)
    assert return_code == 0
    result_line = output.splitlines()[-1]
    assert result_line.startswith(f'{image}: ')
    assert result_line.split(': ')[1].split(' ')[0] in DIGITS_CLASSES


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG file whose header declares ``width`` x ``height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack(
            '>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
            + chunk(b'IDAT', zlib.compress(b'\0' * 4096)) + chunk(b'IEND', b''))


@pytest.mark.parametrize('case, expected', [
    ('missing image', 'no such image or folder'),
    ('empty folder', 'holds no image file'),
    ('existing out', 'exists; choose a new file name'),
    ('unknown model', ''),
    ('--device nonsense', "device 'nonsense': not a device name; pass cpu or cuda:N"),
    ('--device cuda:999', "device 'cuda:999': this machine has "),
    ('--device mps', "device 'mps': only cpu and cuda:N are supported"),
    ('empty image (0 bytes)', 'x.png: is empty (0 bytes)'),
    ('not an image', 'x.png: cannot be read as an image'),
    ('PNG declaring 10000x10000 pixels', 'x.png: declares 10000x10000 pixels; at most '
     '89478485 pixels are decoded'),
    ('PNG declaring 32000x33000 pixels', 'x.png: declares more than 178956970 pixels; '
     'at most 89478485'),
])
def test_image_demo_bad_input_gives_one_error_line_and_keeps_files(
        case, expected, digits_checkpoint, tmp_path, capsys):
    image_path = tmp_path / 'images'
    image_path.mkdir()
    out = tmp_path / 'results.json'
    out.write_text('keep me')
    args = {
        'missing image': [str(tmp_path / 'no.png'), DIGITS_CONFIG, digits_checkpoint],
        'empty folder': [str(image_path), DIGITS_CONFIG, digits_checkpoint],
        'existing out': [str(image_path), DIGITS_CONFIG, digits_checkpoint, '--out',
                         str(out)],
        'unknown model': [str(image_path), 'repvgg-Z9', digits_checkpoint],
    }.get(case, [str(image_path), DIGITS_CONFIG, digits_checkpoint])
    if case.startswith('--device'):
        args += case.split()
    image_bytes = {'empty image (0 bytes)': b'', 'not an image': b'not an image',
                   'PNG declaring 10000x10000 pixels': png_declaring(10000, 10000),
                   'PNG declaring 32000x33000 pixels': png_declaring(32000, 33000)}
    if case != 'empty folder':
        (image_path / 'x.png').write_bytes(image_bytes.get(case, png_declaring(32, 32)))
    return_code, output, errors = run_image_demo(*args, capsys=capsys)
    assert return_code == 1
    assert output == ''
    assert errors.startswith('error: ') and errors.count('\n') == 1
    assert expected in errors
    assert out.read_text() == 'keep me'


def test_inference_model_classifies_whatever_mmengine_scope_is_current(tmp_path):
    """An earlier mmengine Runner without default_scope leaves 'mmengine' current, whose
    registry has no mmpretrain transform; inference_model still builds its pipeline."""
    image = tmp_path / 'black.png'
    Image.new('RGB', (32, 32)).save(image)
    model = get_model(DIGITS_CONFIG)
    with DefaultScope.overwrite_default_scope('mmengine'):
        result = inference_model(model, str(image))
        assert DefaultScope.get_current_instance().scope_name == 'mmengine'
    assert 0 <= result['pred_label'] < len(DIGITS_CLASSES)

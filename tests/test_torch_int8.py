"""INT8 in PyTorch (PT2E, torchao's x86 Inductor quantizer): the quantized digits
classifier agrees with its FP32 deploy form on held-out images, takes other batch sizes,
and a missing torchao or torch.export is one line."""
import os
import sys
from glob import glob

import numpy as np
import pytest
import torch
from PIL import Image

from mmrepvgg.apis import get_model
from mmrepvgg.deploy import torch_int8
from mmrepvgg.deploy.torch_int8 import TorchInt8Error, quantize_pt2e_model
from mmrepvgg.models import build_model, repvgg_classifier_cfg
from mmrepvgg._utils import MissingExtraError

from conftest import REPO_ROOT

try:
    from torch.export import Dim  # noqa: F401  (PT2E's dynamic batch; torch >= 2.2)
except ImportError:
    pytest.skip(f'PT2E quantization (torch.export.Dim, torchao): not in torch {torch.__version__}, '
                'a newer torch has it', allow_module_level=True)
pytest.importorskip('torchao')

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')
DIGITS_MEAN, DIGITS_STD = 77.84, 95.89  # configs/digits/repvgg-A0_digits.py
CALIBRATION_BATCH = 32


def digits_images(split_root) -> torch.Tensor:
    """The split's PNGs as the config's test pipeline gives them: grey loaded as 3
    channels, bicubic 32x32 (pillow), normalised: ``(N, 3, 32, 32)``."""
    arrays = [np.asarray(Image.open(path).convert('RGB').resize((32, 32), Image.BICUBIC),
                         dtype=np.float32)
              for path in sorted(glob(os.path.join(split_root, '*', '*.png')))]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (images - DIGITS_MEAN) / DIGITS_STD


@pytest.fixture(scope='module')
def digits_int8(digits_workspace, digits_train_checkpoint):
    """``(FP32 model, its INT8 form, held-out images)``: the session's trained digits
    classifier calibrated on 128 training images; the test session's one compiled
    INT8 model."""
    fp32_model = get_model(DIGITS_CONFIG, pretrained=digits_train_checkpoint)
    data_root = digits_workspace / 'data' / 'digits'
    train_images = digits_images(data_root / 'train')
    calibration = train_images[torch.randperm(len(train_images),
                                              generator=torch.Generator().manual_seed(0))[:128]]
    int8_model = quantize_pt2e_model(fp32_model, calibration.split(CALIBRATION_BATCH))
    return fp32_model, int8_model, digits_images(data_root / 'val')


@pytest.mark.slow  # torch.compile of A0: tens of seconds per batch size on 2 cores
def test_int8_logits_agree_with_fp32_on_held_out_digits(digits_int8):
    fp32_model, int8_model, val_images = digits_int8
    images = val_images[:len(val_images) // CALIBRATION_BATCH * CALIBRATION_BATCH]
    with torch.no_grad():
        expected = fp32_model(images)
    logits = torch.cat([int8_model(batch) for batch in images.split(CALIBRATION_BATCH)])
    agreement = (logits.argmax(1) == expected.argmax(1)).float().mean().item()
    sqnr_db = 10 * torch.log10(expected.square().sum() / (expected - logits).square().sum())
    assert len(images) == 352
    # The 1-epoch model has close runners-up (about half its top-1 right), which a real
    # quantization flips now and then: measured 93 % agreement, 23 dB; a graph with wrong
    # scales or weights is off by order 1 (SQNR near 0 dB).
    assert agreement >= 0.85
    assert sqnr_db > 15
    assert not torch.equal(logits, expected)  # it is quantized, not the FP32 model


@pytest.mark.slow
def test_int8_model_takes_another_batch_size(digits_int8):
    _, int8_model, val_images = digits_int8
    assert int8_model.batch_size is None and int8_model.notices == []
    # Per-image results do not depend on the batch: static activation scales.
    torch.testing.assert_close(int8_model(val_images[:7]),
                               int8_model(val_images[:CALIBRATION_BATCH])[:7])


def tiny_classifier():
    return build_model(repvgg_classifier_cfg(dict(num_blocks=(1, 1, 1, 1),
                                                  width_factor=(1, 1, 1, 1)),
                                             num_classes=3, base_channels=8))


def test_fixed_batch_where_torch_export_cannot_make_it_dynamic(monkeypatch):
    export = torch.export.export

    def static_only(model, args, dynamic_shapes=None, **kwargs):
        if dynamic_shapes is not None:
            raise RuntimeError('dynamic shapes unsupported here\nsecond line')
        return export(model, args, **kwargs)
    monkeypatch.setattr(torch.export, 'export', static_only)
    int8_model = quantize_pt2e_model(tiny_classifier(), [torch.randn(4, 3, 32, 32)] * 2)
    assert int8_model.batch_size == 4
    assert int8_model.notices == [
        'torch.export could not make the batch dimension dynamic (RuntimeError: dynamic '
        'shapes unsupported here); the INT8 model takes batches of 4 only']
    with pytest.raises(TorchInt8Error, match=r'^this INT8 model was exported for batches of '
                       r'4 images, got 3; pass batches of 4$'):
        int8_model(torch.randn(3, 3, 32, 32))


def test_missing_torchao_is_one_line_naming_the_extra(monkeypatch):
    for name in [name for name in sys.modules if name.split('.')[0] == 'torchao']:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, 'torchao', None)
    with pytest.raises(MissingExtraError) as error:
        quantize_pt2e_model(tiny_classifier(), [torch.randn(2, 3, 32, 32)])
    assert '\n' not in str(error.value)
    assert str(error.value).startswith('torchao.quantization.pt2e.quantize_pt2e is not '
                                       'installed')
    assert str(error.value).endswith('pip install "mmrepvgg[torch-int8]"')


def test_torch_without_torch_export_is_one_line(monkeypatch):
    monkeypatch.delattr(torch, 'export')
    with pytest.raises(TorchInt8Error, match=r'^PyTorch INT8 \(PT2E\) needs torch.export '
                       r'with torch.export.Dim \(torch >= 2.2\), this is torch \S+; upgrade '
                       'torch or use the ONNX Runtime or OpenVINO INT8 backends$'):
        torch_int8.quantize_pt2e_model(tiny_classifier(), [torch.randn(2, 3, 32, 32)])


@pytest.mark.parametrize('calibration', [[], [torch.randn(0, 3, 32, 32)],
                                         [torch.randn(3, 32, 32)]])
def test_calibration_must_be_image_batches(calibration):
    with pytest.raises(ValueError, match='^PT2E INT8 needs calibration_batches'):
        quantize_pt2e_model(tiny_classifier(), calibration)

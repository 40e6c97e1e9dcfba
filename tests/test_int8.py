"""INT8 export: calibrated on the config's preprocessed images, static per-channel QDQ,
checked against FP32 on held-out images; inputs are never overwritten."""
import contextlib
import os
import re
import sys
from io import StringIO

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import load_checkpoint
from mmrepvgg.deploy._onnx_eval import preprocessed_batches
from mmrepvgg.deploy._mixed_precision import Agreement, MiouAgreement
from mmrepvgg.deploy._mixed_precision import agreement as top1_agreement
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
from mmrepvgg.deploy._qdq import _CalibrationBatches, _output_nodes
from mmrepvgg.engine import load_repvgg_config

from conftest import REPO_ROOT, load_tool, working_directory

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')
DIGITS_MEAN, DIGITS_STD = 77.84, 95.89  # configs/digits/repvgg-A0_digits.py

pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')


def export_in_workspace(workspace, checkpoint: str, output, *options: str) -> str:
    """Run pytorch2onnx on the digits config in ``workspace`` (its data_root is
    relative): what it printed; it must succeed."""
    printed = StringIO()
    with working_directory(workspace), contextlib.redirect_stdout(printed):
        code = pytorch2onnx.main([DIGITS_CONFIG, checkpoint, str(output), *options])
    assert code == 0, printed.getvalue()
    return printed.getvalue()


@pytest.fixture(scope='module')
def int8_export(digits_workspace, digits_train_checkpoint):
    """The INT8 file of the short-trained digits model and what the tool printed."""
    output = digits_workspace / 'a0_int8.onnx'
    printed = export_in_workspace(digits_workspace, digits_train_checkpoint, output,
                                  '--quantize', 'int8', '--calib-images', '64',
                                  '--check-images', '96', '--force')
    return str(output), printed


def test_int8_export_reports_calibration_progress_and_agreement(int8_export):
    _, printed = int8_export
    # 64 calibration images in the digits training batches of 32, once per recipe tried.
    progress = re.findall(r'calibrating: batch (\d)/(\d) \((\d+) images\)', printed)
    assert progress and progress == [('1', '2', '32'), ('2', '2', '64')] * (len(progress) // 2)
    agreement = re.search(r'agreement on (\d+) held-out test images: ([\d.]+) % '
                          r'\((\d+)/(\d+)\)', printed)
    assert agreement, printed
    images, rate, agree, total = agreement.groups()
    assert images == total == '96'
    assert float(rate) == pytest.approx(100 * int(agree) / int(total), abs=0.005)


def test_the_default_export_keeps_top1_within_one_point_of_pytorch_or_says_so(
        int8_export, digits_workspace, digits_train_checkpoint, monkeypatch):
    path, printed = int8_export
    monkeypatch.chdir(digits_workspace)
    cfg = load_repvgg_config(DIGITS_CONFIG)
    model = build_train_model(cfg)
    load_checkpoint(model, digits_train_checkpoint, 'convert')
    images, labels = (np.concatenate(part) for part in zip(
        *pytorch2onnx.held_out_batches(cfg, 96)))  # the tool's --check-images 96
    with torch.no_grad():
        fp32_top1 = np.mean(model(torch.from_numpy(images)).numpy().argmax(1) == labels)
    int8_top1 = np.mean(OnnxRuntimeModel(path)(images).argmax(1) == labels)
    change_points = 100 * (int8_top1 - fp32_top1)
    outcome = printed.strip().splitlines()[-1]
    assert outcome.startswith('INT8 recipe: minmax calibration')
    assert f'top-1 change {change_points:+.2f} points' in outcome
    assert outcome.endswith('within the 1-point bound' if change_points >= -1.0 else
                            'keep more convs FP32)')
    assert re.search(r'^CPU: .+ ONNX Runtime INT8 kernels', printed, re.MULTILINE)


def test_the_check_images_are_drawn_from_every_class_not_the_first_class_folders(
        digits_workspace, monkeypatch):
    monkeypatch.chdir(digits_workspace)
    cfg = load_repvgg_config(DIGITS_CONFIG)
    first_96 = np.concatenate([batch.labels for batch in preprocessed_batches(
        cfg, 'test_dataloader', 96, shuffle=False)])
    assert len(set(first_96)) <= 3  # the class folders' order: 36 test images of each digit
    checked = [np.concatenate(part) for part in zip(*pytorch2onnx.held_out_batches(cfg, 96))]
    assert len(checked[1]) == 96 and set(checked[1]) == set(range(10))
    again = [np.concatenate(part) for part in zip(*pytorch2onnx.held_out_batches(cfg, 96))]
    for part, part_again in zip(checked, again):  # seeded: the same images on every run
        np.testing.assert_array_equal(part, part_again)


def test_int8_file_holds_per_channel_int8_convs_and_fp32_logits(int8_export):
    path, _ = int8_export
    graph = onnx.load(path).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    conv_weight_scales = []
    for node in graph.node:
        if node.op_type == 'DequantizeLinear' and initializers.get(node.input[0]) is not None:
            weight = initializers[node.input[0]]
            if len(weight.dims) == 4:  # a conv kernel (C_out, C_in, 3, 3)
                assert weight.data_type == TensorProto.INT8
                assert list(initializers[node.input[1]].dims) == [weight.dims[0]]
                conv_weight_scales.append(node.input[1])
    assert len(conv_weight_scales) == 22  # every fused conv of A0 (1 + 2 + 4 + 14 + 1)
    (head, ) = [node for node in graph.node if 'output' in node.output]
    assert head.op_type == 'Gemm'  # the logits come out of an unquantized op


def test_int8_logits_stay_close_to_fp32_on_digits(int8_export, digits_workspace,
                                                  digits_train_checkpoint, tmp_path,
                                                  monkeypatch):
    monkeypatch.chdir(digits_workspace)
    fp32_path = str(tmp_path / 'fp32.onnx')
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, fp32_path,
                              '--shape', '32', '32']) == 0
    images = next(preprocessed_batches(load_repvgg_config(DIGITS_CONFIG),
                                       'test_dataloader', 64, shuffle=False)).images
    fp32, int8 = (OnnxRuntimeModel(path)(images)
                  for path in (fp32_path, int8_export[0]))
    # A real quantization of the same function: close, but not bit-equal (measured 0.16
    # on the 6-epoch digits model; a different or broken graph is off by order 1).
    relative = np.abs(int8 - fp32).max() / np.abs(fp32).max()
    assert 1e-5 < relative < 0.3


def test_calibration_images_pass_through_the_config_preprocessing(digits_workspace,
                                                                  monkeypatch):
    monkeypatch.chdir(digits_workspace)
    cfg = load_repvgg_config(DIGITS_CONFIG)
    batch = next(preprocessed_batches(cfg, 'test_dataloader', 3, shuffle=False))
    assert batch.images.shape == (3, 3, 32, 32) and batch.images.dtype == np.float32
    # CustomDataset lists the class folders in order, each folder's files sorted.
    first_label = 0
    first_file = os.path.join('0', sorted(os.listdir('data/digits/val/0'))[0])
    pixels = np.asarray(Image.open(os.path.join('data/digits/val', first_file)).convert('RGB')
                        .resize((32, 32), Image.BICUBIC), dtype=np.float32)
    expected = (pixels.transpose(2, 0, 1) - DIGITS_MEAN) / DIGITS_STD
    np.testing.assert_allclose(batch.images[0], expected, atol=1e-4)
    assert batch.labels[0] == first_label


def test_calibration_reader_feeds_every_batch_once_then_rewinds():
    batches = [np.zeros((2, 3, 4, 4), np.float32), np.ones((1, 3, 4, 4), np.float32)]
    seen = []
    reader = _CalibrationBatches(batches, 'input', lambda *counts: seen.append(counts))
    fed = [reader.get_next(), reader.get_next(), reader.get_next()]
    assert [feed['input'].shape[0] for feed in fed[:2]] == [2, 1] and fed[2] is None
    assert seen == [(1, 2, 2), (2, 2, 3)]
    reader.rewind()
    assert reader.get_next()['input'] is batches[0]


def _linear_model(path, weight):
    """An ONNX model ``logits = input @ weight`` for input ``(N, 2)``."""
    graph = helper.make_graph(
        [helper.make_node('MatMul', ['input', 'weight'], ['output'], name='head')], 'g',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['N', 2])],
        [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['N', 2])],
        [helper.make_tensor('weight', TensorProto.FLOAT, [2, 2], weight)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    return str(path)


def test_top1_agreement_counts_agreeing_and_correct_images(tmp_path):
    identity_path = _linear_model(tmp_path / 'identity.onnx', [1, 0, 0, 1])
    identity = OnnxRuntimeModel(identity_path)
    swapped = OnnxRuntimeModel(_linear_model(tmp_path / 'swapped.onnx', [0, 1, 1, 0]))
    images = np.array([[2, 1], [1, 2], [3, 0]], np.float32)  # identity says 0, 1, 0
    labels = np.array([0, 0, 1])
    agreement = top1_agreement(identity, identity, [(images, labels)])
    assert agreement == (3, 3, 1, 1, 0, 0)
    agreement = top1_agreement(identity, swapped, [(images[:2], labels[:2]),
                                                   (images[2:], labels[2:])])
    # image 0: only identity right; images 1 and 2: only swapped right
    assert agreement == (3, 0, 1, 2, 1, 2) and agreement.rate == 0
    assert agreement.top1_change_interval(z=0)[0] == pytest.approx(100 / 3)
    assert _output_nodes(identity_path) == ['head']


@pytest.mark.parametrize('gained, lost', [(10, 30), (3, 4), (0, 12)])
def test_the_top1_change_interval_covers_what_resampling_the_test_images_gives(gained, lost):
    """The paired interval against a bootstrap of the same images: each image either
    moves the difference by one (a gain or a loss) or not at all."""
    count = 960
    agreement = Agreement(count, count - gained - lost - 5, 600, 600 + gained - lost,
                          lost, gained)  # 5 images both get wrong, differently
    outcomes = np.zeros(count)
    outcomes[:gained], outcomes[gained:gained + lost] = 1, -1
    generator = np.random.default_rng(0)
    resampled = 100 * outcomes[generator.integers(0, count, (20000, count))].mean(axis=1)
    low, high = agreement.top1_change_interval()
    assert (low + high) / 2 == pytest.approx(100 * (gained - lost) / count)
    assert low == pytest.approx(np.percentile(resampled, 2.5), abs=0.1)
    assert high == pytest.approx(np.percentile(resampled, 97.5), abs=0.1)


def test_each_comparison_describes_itself_in_one_line():
    """The lines the export tools print, from counts worked out by hand."""
    top1 = Agreement(360, 350, 340, 338, 4, 2)
    assert top1.describe('FP32', 'INT8') == (
        'INT8 vs FP32 top-1 agreement on 360 held-out test images: 97.22 % (350/360); '
        'top-1 FP32 94.44 %, INT8 93.89 %')
    # Per class (intersection, union): FP32 (1/2 + 3/4) / 2, INT8 (1/4 + 3/4) / 2.
    miou = MiouAgreement(3, 100, 90, np.array([[1, 2], [3, 4]]), np.array([[1, 4], [3, 4]]))
    assert miou.describe('FP32', 'INT8') == (
        'INT8 vs FP32 on 3 held-out test images: mIoU FP32 62.50 %, INT8 50.00 % (change '
        '-12.50 points); pixel agreement 90.00 %')
    same = MiouAgreement(3, 100, 100, np.array([[1, 2]]), np.array([[1, 2]]))
    assert '(change +0.00 points)' in same.describe('FP32', 'INT8')  # not '-0.00'


@pytest.mark.parametrize('output_role', ['checkpoint', 'config'])
def test_export_refuses_to_write_over_its_own_input_even_with_force(
        output_role, digits_train_checkpoint, tmp_path, capsys):
    source = tmp_path / ('ck.pth' if output_role == 'checkpoint' else 'config.py')
    source.write_bytes(open(digits_train_checkpoint if output_role == 'checkpoint'
                            else DIGITS_CONFIG, 'rb').read())
    before = source.read_bytes()
    argv = ([DIGITS_CONFIG, str(source)] if output_role == 'checkpoint' else
            [str(source), digits_train_checkpoint])
    with pytest.raises(SystemExit) as exit_info:
        pytorch2onnx.main([*argv, str(source), '--force', '--quantize', 'int8'])
    assert exit_info.value.code == 2
    assert f'is the {output_role} it is made from' in capsys.readouterr().err
    assert source.read_bytes() == before


def test_missing_onnxruntime_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails as if absent
    for name in [name for name in sys.modules if name.startswith('mmrepvgg.deploy.')]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(SystemExit) as exit_info:
        load_tool('tools/deployment/pytorch2onnx.py')
    message = str(exit_info.value.code)
    assert message.startswith('error: onnxruntime is not installed')
    assert 'pip install "mmrepvgg[onnx]"' in message and '\n' not in message


def test_int8_file_takes_the_data_image_size_and_any_batch(int8_export):
    """The file's input is the size the config's test pipeline makes (32x32 digits),
    with a symbolic batch: the INT8 file runs batches of 1 and 5."""
    session = OnnxRuntimeModel(int8_export[0]).session
    (model_input, ) = session.get_inputs()
    assert model_input.shape[1:] == [3, 32, 32] and isinstance(model_input.shape[0], str)
    for batch in (1, 5):
        (logits, ) = session.run(None, {'input': torch.randn(batch, 3, 32, 32).numpy()})
        assert logits.shape == (batch, 10)


def test_export_refuses_an_output_that_is_a_hard_link_to_its_checkpoint(
        digits_train_checkpoint, tmp_path, capsys):
    checkpoint = tmp_path / 'ck.pth'
    checkpoint.write_bytes(open(digits_train_checkpoint, 'rb').read())
    os.link(checkpoint, tmp_path / 'ck.onnx')
    before = checkpoint.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        pytorch2onnx.main([DIGITS_CONFIG, str(checkpoint), str(tmp_path / 'ck.onnx'),
                           '--force'])
    assert exit_info.value.code == 2
    assert 'is the checkpoint it is made from' in capsys.readouterr().err
    assert checkpoint.read_bytes() == before

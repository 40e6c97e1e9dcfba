"""Segmentor INT8: ``pytorch2onnx.py SEG_CONFIG CKPT out.onnx --quantize int8`` on a
short-trained digits FCN, judged on mIoU, and ``tools/deployment/test.py`` evaluating the
FP32 and INT8 files with the config's IoUMetric. References: mmseg's own IoUMetric
arithmetic, and a numpy confusion matrix over ONNX Runtime's outputs on the PNG files."""
import re

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from PIL import Image
from torch.nn import functional as F

from mmrepvgg.dense._mmcv_ops import install_mmcv_ops_stand_in

install_mmcv_ops_stand_in()

from mmseg.evaluation.metrics import IoUMetric  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

from conftest import REPO_ROOT, load_tool  # noqa: E402
from mmrepvgg.apis.convert import build_train_model  # noqa: E402
from mmrepvgg.datasets import prepare_digit_canvases  # noqa: E402
from mmrepvgg.deploy._mixed_precision import IGNORE_INDEX, agreement  # noqa: E402
from mmrepvgg.deploy._onnx_eval import exported_model_test_config  # noqa: E402
from mmrepvgg.engine import ConfigError  # noqa: E402
from mmrepvgg.registry import MODELS  # noqa: E402
from tool_output import parse_test_metrics  # noqa: E402

SEG_CONFIG = f'{REPO_ROOT}/configs/mmseg/digits/fcn_repvgg-A0-d8_digits.py'
ADE20K_CONFIG = f'{REPO_ROOT}/configs/mmseg/fcn_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py'
NUM_CLASSES = 11  # background and ten digits
NUM_VAL = 8


def mmseg_miou(class_maps: np.ndarray, labels: np.ndarray) -> float:
    """mIoU in points as mmseg's IoUMetric computes it over a data set."""
    areas = [IoUMetric.intersect_and_union(torch.from_numpy(classes), torch.from_numpy(truth),
                                           NUM_CLASSES, IGNORE_INDEX)
             for classes, truth in zip(class_maps, labels)]
    totals = [sum(area[index] for area in areas) for index in range(4)]
    return 100 * float(np.nanmean(IoUMetric.total_area_to_metrics(*totals)['IoU']))


def confusion_miou(class_maps: np.ndarray, labels: np.ndarray) -> float:
    """mIoU in points from a confusion matrix over the labelled pixels."""
    labelled = labels != IGNORE_INDEX
    confusion = np.bincount(NUM_CLASSES * labels[labelled] + class_maps[labelled],
                            minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    return 100 * float(np.mean(np.diag(confusion)[union > 0] / union[union > 0]))


def test_the_miou_comparison_counts_as_mmseg_does_and_leaves_out_ignored_pixels():
    generator = np.random.default_rng(0)
    labels = generator.integers(0, NUM_CLASSES, (6, 9, 7))
    labels[:, :2] = IGNORE_INDEX
    labels[labels == 4] = 0  # a class nobody labels: mmseg leaves it out of the mean
    logits = generator.normal(size=(6, NUM_CLASSES, 9, 7)).astype(np.float32)
    noisy = logits + generator.normal(scale=0.8, size=logits.shape).astype(np.float32)
    batches = [(images, labels[index:index + 3])
               for index, images in ((0, np.arange(3)), (3, np.arange(3, 6)))]
    measured = agreement(lambda index: logits[index], lambda index: noisy[index], batches)
    expected, actual = logits.argmax(1), noisy.argmax(1)
    assert measured.reference_miou == pytest.approx(mmseg_miou(expected, labels))
    assert measured.candidate_miou == pytest.approx(mmseg_miou(actual, labels))
    assert measured.drop_points == pytest.approx(
        confusion_miou(expected, labels) - confusion_miou(actual, labels))
    labelled = labels != IGNORE_INDEX
    assert measured.num_pixels == labelled.sum() and measured.num_images == 6
    assert measured.rate == pytest.approx((expected == actual)[labelled].mean())


@pytest.fixture(scope='module')
def digits_fcn(tmp_path_factory):
    """A digits FCN trained for a few iterations on a few canvases, and its data."""
    root = tmp_path_factory.mktemp('seg_int8')
    data_root = str(root / 'canvases') + '/'
    prepare_digit_canvases(data_root, num_train=24, num_val=NUM_VAL)
    demo = load_tool('tools/dense_demo.py')
    args = demo.parse_args(['--data-root', data_root, '--seg-iters', '12'])
    cfg = demo.task_config(SEG_CONFIG, str(root / 'work'), args,
                           demo.schedule_options('segmentation', args))
    runner = Runner.from_cfg(cfg)
    runner.train()
    options = [f'{loader}.dataset.data_root={data_root}'
               for loader in ('train_dataloader', 'test_dataloader')]
    return root, str(root / 'work' / 'iter_12.pth'), options


def reference_miou(onnx_path: str, data_root: str, file_size=None) -> float:
    """The file's mIoU on the val canvases, read and normalised here (grey PNGs: the
    config's mean and std per pixel), run by ONNX Runtime; ``file_size`` ``(H, W)``: the
    canvases resized to it (bilinear) and the logits back to 64x64."""
    session = onnxruntime.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    names = [f'canvas_{index:04d}.png' for index in range(NUM_VAL)]
    pixels = np.stack([np.asarray(Image.open(f'{data_root}images/val/{name}'), np.float32)
                       for name in names])
    images = np.repeat(((pixels - 15.56) / 48.39)[:, None], 3, axis=1)
    labels = np.stack([np.asarray(Image.open(f'{data_root}masks/val/{name}')).astype(np.int64)
                       for name in names])
    if file_size is not None:
        images = F.interpolate(torch.from_numpy(images), size=file_size, mode='bilinear',
                               align_corners=False).numpy()
    (logits, ) = session.run(None, {session.get_inputs()[0].name: images})
    if file_size is not None:
        logits = F.interpolate(torch.from_numpy(logits), size=labels.shape[1:],
                               mode='bilinear', align_corners=False).numpy()
    return confusion_miou(logits.argmax(1), labels)


def test_int8_export_keeps_miou_within_the_bound_and_test_tool_reports_both_files(
        digits_fcn, capsys):
    root, checkpoint, options = digits_fcn
    data_root = options[0].split('=', 1)[1]
    export, test = (load_tool(f'tools/deployment/{name}.py') for name in ('pytorch2onnx', 'test'))
    fp32_path, int8_path = str(root / 'fcn.onnx'), str(root / 'fcn_int8.onnx')
    assert export.main([SEG_CONFIG, checkpoint, fp32_path, '--cfg-options', *options]) == 0
    assert export.main([SEG_CONFIG, checkpoint, int8_path, '--quantize', 'int8',
                        '--calib-images', '16', '--check-images', str(NUM_VAL),
                        '--cfg-options', *options]) == 0
    printed = capsys.readouterr().out
    assert 'QuantizeLinear' in {node.op_type for node in onnx.load(int8_path).graph.node}
    fp32_miou, int8_miou = (reference_miou(path, data_root) for path in (fp32_path, int8_path))

    assert re.search(r'^CPU: .*; ONNX Runtime INT8 kernels', printed, re.M)
    shown = re.search(rf'on {NUM_VAL} held-out test images: mIoU FP32 ([\d.]+) %, INT8 '
                      r'([\d.]+) % \(change ([-+][\d.]+) points\)', printed)
    assert shown, printed
    assert float(shown[1]) == pytest.approx(fp32_miou, abs=0.006)
    assert float(shown[2]) == pytest.approx(int8_miou, abs=0.006)
    outcome = printed.strip().splitlines()[-1]
    assert outcome.startswith('INT8 recipe: minmax calibration')
    if fp32_miou - int8_miou <= 1:
        assert outcome.endswith('within the 1-point bound')
    else:  # past it after every step: the report must say so
        assert 'past the 1-point bound after every recipe step' in outcome

    for path, expected in ((fp32_path, fp32_miou), (int8_path, int8_miou)):
        assert test.main([SEG_CONFIG, path, '--work-dir', str(root / 'test'),
                          '--cfg-options', options[1]]) == 0
        metrics = parse_test_metrics(capsys.readouterr().out)
        assert metrics['mIoU'] == pytest.approx(expected, abs=0.006)  # mmseg rounds to 0.01


@pytest.mark.slow
def test_an_openvino_int8_segmentor_is_compared_on_miou_and_tested_by_the_test_tool(
        digits_fcn, capsys):
    pytest.importorskip('nncf')  # the [openvino] extra
    root, checkpoint, options = digits_fcn
    export, test = (load_tool(f'tools/deployment/{name}.py') for name in ('pytorch2onnx', 'test'))
    xml_path = str(root / 'fcn_int8.xml')
    assert export.main([SEG_CONFIG, checkpoint, xml_path, '--backend', 'openvino',
                        '--quantize', 'int8', '--calib-images', '8', '--check-images',
                        str(NUM_VAL), '--cfg-options', *options]) == 0
    shown = re.search(r'OpenVINO INT8 vs PyTorch FP32 on \d+ held-out test images: mIoU '
                      r'PyTorch FP32 [\d.]+ %, OpenVINO INT8 ([\d.]+) %',
                      capsys.readouterr().out)
    assert shown
    assert test.main([SEG_CONFIG, xml_path, '--work-dir', str(root / 'test'),
                      '--cfg-options', options[1]]) == 0
    tested = parse_test_metrics(capsys.readouterr().out)['mIoU']
    assert tested == pytest.approx(float(shown[1]), abs=0.006)


def test_a_file_of_another_size_is_tested_on_images_resized_to_it_where_the_pipeline_keeps_sizes(
        digits_fcn, capsys):
    # ADE20K's test pipeline keeps each image's aspect ratio, so its images differ in size
    # and an exported file takes one; the canvases' pipeline keeps their size too.
    root, checkpoint, options = digits_fcn
    data_root = options[0].split('=', 1)[1]
    export, test = (load_tool(f'tools/deployment/{name}.py') for name in ('pytorch2onnx', 'test'))
    small_path = str(root / 'fcn_48.onnx')
    assert export.main([SEG_CONFIG, checkpoint, small_path, '--shape', '48', '48',
                        '--cfg-options', *options]) == 0
    capsys.readouterr()
    assert test.main([SEG_CONFIG, small_path, '--work-dir', str(root / 'test'),
                      '--cfg-options', options[1]]) == 0
    printed = capsys.readouterr().out
    assert (f"notice: the config's test pipeline keeps each image's size and {small_path} "
            'takes 48x48 images') in printed
    expected = reference_miou(small_path, data_root, file_size=(48, 48))
    assert parse_test_metrics(printed)['mIoU'] == pytest.approx(expected, abs=0.006)


def test_a_file_of_another_size_is_refused_in_one_line_where_the_pipeline_makes_one_size(
        digits_fcn, monkeypatch):
    root, checkpoint, options = digits_fcn
    export = load_tool('tools/deployment/pytorch2onnx.py')
    small_path = str(root / 'fcn_48_fixed.onnx')
    assert export.main([SEG_CONFIG, checkpoint, small_path, '--shape', '48', '48',
                        '--cfg-options', *options]) == 0
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.test_dataloader.dataset.pipeline.insert(  # a fixed size: an export mistake to refuse
        1, dict(type='Resize', scale=(64, 64), keep_ratio=False))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # as the Runner builds it
        exported = MODELS.build(exported_model_test_config(cfg, small_path).model)
    with pytest.raises(ConfigError) as error:
        exported(torch.zeros(1, 3, 64, 64), [SegDataSample()], mode='predict')
    assert str(error.value) == (
        f"{small_path} takes 48x48 images but the config's test pipeline makes 64x64; export "
        'again with --shape 64 64 (or without --shape: the export takes the pipeline size)')


@pytest.fixture(scope='module')
def ade20k_layout(tmp_path_factory):
    """An ADE20K-layout folder of photos of several sizes (scikit-image's; labels from
    brightness bands, 1-based as ADE20K's) and a randomly initialised FCN of the shipped
    ADE20K config: ``(data_root, checkpoint)``."""
    skimage_data = pytest.importorskip('skimage.data')
    root = tmp_path_factory.mktemp('ade20k')
    data_root = root / 'ADEChallengeData2016'
    for split, names in (('training', ('astronaut', 'chelsea', 'coffee')),
                         ('validation', ('rocket', 'camera', 'chelsea'))):
        for folder in ('images', 'annotations'):
            (data_root / folder / split).mkdir(parents=True)
        for name in names:
            image = getattr(skimage_data, name)()
            image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
            labels = 1 + 20 * (image.mean(axis=2) * 6 / 256).astype(np.uint8)
            Image.fromarray(image).save(data_root / 'images' / split / f'{name}.jpg')
            Image.fromarray(labels).save(data_root / 'annotations' / split / f'{name}.png')
    cfg = Config.fromfile(ADE20K_CONFIG)
    torch.manual_seed(0)
    checkpoint = root / 'fcn_random.pth'
    torch.save({'state_dict': build_train_model(cfg).state_dict()}, checkpoint)
    return str(data_root), str(checkpoint)


def test_an_ade20k_config_exports_int8_and_the_test_tool_runs_its_file_on_every_image_size(
        ade20k_layout, tmp_path, capsys):
    data_root, checkpoint = ade20k_layout
    export, test = (load_tool(f'tools/deployment/{name}.py') for name in ('pytorch2onnx', 'test'))
    options = [f'{loader}.dataset.data_root={data_root}'
               for loader in ('train_dataloader', 'test_dataloader')]
    int8_path = str(tmp_path / 'fcn_int8.onnx')
    assert export.main([ADE20K_CONFIG, checkpoint, int8_path, '--shape', '64', '64',
                        '--quantize', 'int8', '--calib-images', '3', '--check-images', '3',
                        '--cfg-options', *options]) == 0
    assert 'on 3 held-out test images: mIoU FP32' in capsys.readouterr().out
    assert test.main([ADE20K_CONFIG, int8_path, '--work-dir', str(tmp_path / 'test'),
                      '--cfg-options', options[1]]) == 0
    printed = capsys.readouterr().out
    assert 'takes 64x64 images: an image of another size is resized to it' in printed
    assert 0 <= parse_test_metrics(printed)['mIoU'] <= 100


def test_an_exported_file_with_a_detector_config_is_refused_by_the_test_tool_in_one_line(
        tmp_path, capsys):
    model_file = tmp_path / 'model.onnx'
    model_file.write_bytes(b'not read')
    test = load_tool('tools/deployment/test.py')
    assert test.main([f'{REPO_ROOT}/configs/mmdet/retinanet_repvgg-A0_fpn_1x_coco.py',
                      str(model_file), '--work-dir', str(tmp_path / 'test')]) == 1
    (line, ) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: ') and 'a detector config' in line


def test_a_classifier_whose_test_pipeline_keeps_the_image_size_needs_shape_in_one_line(
        tmp_path, capsys):
    """Only a segmentor falls back to its data preprocessor's size."""
    config = tmp_path / 'keeps_size.py'
    config.write_text(f"_base_ = ['{REPO_ROOT}/configs/digits/repvgg-A0_digits.py']\n"
                      "test_dataloader = dict(dataset=dict(pipeline=[\n"
                      "    dict(type='LoadImageFromFile'), dict(type='PackInputs')]))\n")
    model = build_train_model(str(config))
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'a0.pth')
    export = load_tool('tools/deployment/pytorch2onnx.py')
    assert export.main([str(config), str(tmp_path / 'a0.pth'), str(tmp_path / 'a0.onnx')]) == 1
    (line, ) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: ') and line.endswith('pass --shape H W')
    assert not (tmp_path / 'a0.onnx').exists()

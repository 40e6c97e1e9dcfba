"""INT8 recipes: calibration methods, per-conv sensitivity, mixed precision; bad input
(no calibration images, a model without a conv) gets one line."""
import math
import os
import tracemalloc

import numpy as np
import onnx
import pytest
import torch

from mmrepvgg.deploy.onnx_export import export_onnx
from mmrepvgg.deploy._mixed_precision import choose_fp32_convs, layer_sensitivity, sqnr_db
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
from mmrepvgg.deploy._qdq import conv_nodes, quantize_int8
from mmrepvgg.deploy.quantization import Int8Recipe
from mmrepvgg.models import build_model, repvgg_classifier_cfg
from lab.synthetic import randomize_batch_norms_

from test_int8 import _linear_model


@pytest.fixture(scope='module')
def small_fp32(tmp_path_factory):
    """An FP32 ONNX A0 (random weights and BN statistics, 10 classes, 32x32), calibration
    batches and held-out labelled batches."""
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    path = str(tmp_path_factory.mktemp('recipes') / 'fp32.onnx')
    export_onnx(model.eval(), path, (1, 3, 32, 32))
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator).numpy()
                   for _ in range(2)]
    images = torch.randn(16, 3, 32, 32, generator=generator).numpy()
    labels = OnnxRuntimeModel(path)(images).argmax(1)  # FP32 is right by construction
    return path, calibration, [(images, labels)]


def _activation_scales(path: str) -> dict:
    """The scale of each QuantizeLinear, by the tensor it quantizes."""
    model = onnx.load(path)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    return {node.input[0]: float(onnx.numpy_helper.to_array(initializers[node.input[1]]))
            for node in model.graph.node if node.op_type == 'QuantizeLinear'}


def test_minmax_scale_is_the_calibration_range_and_the_others_stay_inside(
        small_fp32, tmp_path):
    path, calibration, _ = small_fp32
    images = np.concatenate(calibration)
    # uint8 asymmetric: the range always holds 0, 255 steps.
    expected = (max(images.max(), 0) - min(images.min(), 0)) / 255
    scales = {}
    for method in ('minmax', 'percentile', 'entropy'):
        quantize_int8(path, str(tmp_path / f'{method}.onnx'), calibration, method=method)
        scales[method] = _activation_scales(str(tmp_path / f'{method}.onnx'))
    input_name = 'input'
    assert scales['minmax'][input_name] == pytest.approx(expected, rel=1e-6)
    # the tails of randn are clipped
    assert scales['percentile'][input_name] < scales['minmax'][input_name]
    # Entropy picks a range inside the observed one (on these small random activations
    # it picked the whole range), never a wider one.
    assert scales['entropy'].keys() == scales['minmax'].keys()
    assert all(scales['entropy'][name] <= scale * (1 + 1e-6)
               for name, scale in scales['minmax'].items())


def test_sqnr_is_signal_over_noise_in_decibels():
    reference = np.array([[3.0, 4.0]])  # energy 25
    assert sqnr_db(reference, reference + [[0.5, 0.0]]) == pytest.approx(
        10 * math.log10(25 / 0.25))
    assert sqnr_db(reference, reference) == math.inf


@pytest.fixture(scope='module')
def sensitivity(small_fp32):
    path, calibration, held_out = small_fp32
    return layer_sensitivity(path, calibration, [held_out[0][0]])


def test_sensitivity_ranks_every_conv_worst_first(small_fp32, sensitivity):
    path, _, _ = small_fp32
    rows = sensitivity
    assert sorted(row.node for row in rows) == sorted(conv_nodes(path))
    assert len(rows) == 22  # A0: 1 + 2 + 4 + 14 + 1 fused convs
    assert [row.sqnr_db for row in rows] == sorted(row.sqnr_db for row in rows)
    assert all(0 <= row.agreement <= 1 and math.isfinite(row.sqnr_db) for row in rows)


def test_sensitivity_over_batches_is_that_of_all_the_images_at_once(small_fp32, tmp_path):
    path, calibration, held_out = small_fp32
    images = held_out[0][0]
    rows = layer_sensitivity(path, calibration, [images[:5], images[5:6], images[6:]])
    fp32 = OnnxRuntimeModel(path)(images).astype(np.float64)
    for row in rows[:2] + rows[-1:]:  # the worst two and the best
        one_layer = str(tmp_path / f'{row.position}.onnx')
        quantize_int8(path, one_layer, calibration, only_nodes=[row.node])
        logits = OnnxRuntimeModel(one_layer)(images)
        noise, signal = np.sum((fp32 - logits) ** 2), np.sum(fp32 ** 2)
        assert row.sqnr_db == pytest.approx(10 * math.log10(signal / noise), rel=1e-9)
        assert row.agreement == np.mean(fp32.argmax(1) == logits.argmax(1))


def test_sensitivity_holds_one_batch_of_segmentation_logits_at_a_time(tmp_path):
    """150 classes at 96x96 are 5.5 MB of logits an image, 24 images 133 MB."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 150, 1)).eval()
    path = str(tmp_path / 'segmentor.onnx')
    export_onnx(model, path, (1, 3, 96, 96))
    generator = torch.Generator().manual_seed(0)
    calibration = [torch.randn(1, 3, 96, 96, generator=generator).numpy()]
    held_out = [torch.randn(1, 3, 96, 96, generator=generator).numpy() for _ in range(24)]
    tracemalloc.start()
    try:
        rows = layer_sensitivity(path, calibration, held_out)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) == 2 and all(0 <= row.agreement <= 1 for row in rows)
    all_logits_bytes = 24 * 150 * 96 * 96 * 4
    assert peak_bytes < all_logits_bytes / 4, f'{peak_bytes / 2 ** 20:.0f} MiB'


def test_every_conv_kept_fp32_leaves_only_the_pooling_quantized(small_fp32, tmp_path):
    path, calibration, held_out = small_fp32
    mixed, full = str(tmp_path / 'all_fp32.onnx'), str(tmp_path / 'int8.onnx')
    quantize_int8(path, mixed, calibration, fp32_nodes=conv_nodes(path))
    quantize_int8(path, full, calibration)
    graph = onnx.load(mixed).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == 'DequantizeLinear'}
    convs = [node for node in graph.node if node.op_type == 'Conv']
    assert len(convs) == 22 and not dequantized & {name for node in convs
                                                   for name in node.input}
    images = held_out[0][0]
    fp32 = OnnxRuntimeModel(path)(images)
    errors = [np.abs(OnnxRuntimeModel(file)(images) - fp32).max() / np.abs(fp32).max()
              for file in (mixed, full)]
    assert errors[0] < 0.02 and errors[0] < errors[1] / 3


def test_max_drop_keeps_no_conv_fp32_when_any_drop_is_accepted(
        small_fp32, sensitivity, tmp_path):
    path, calibration, held_out = small_fp32
    candidates = []

    def quantized(fp32_nodes):
        candidates.append(fp32_nodes)
        candidate_path = str(tmp_path / f'{len(candidates)}.onnx')
        quantize_int8(path, candidate_path, calibration, fp32_nodes=fp32_nodes)
        return OnnxRuntimeModel(candidate_path)
    fp32_nodes = choose_fp32_convs(path, calibration, held_out,
                                   Int8Recipe(max_drop_points=100), quantized, sensitivity)
    assert fp32_nodes == [] and candidates == [[]]


def test_max_drop_zero_keeps_convs_fp32_worst_first_until_top1_is_kept(
        small_fp32, sensitivity):
    path, calibration, held_out = small_fp32
    fp32 = OnnxRuntimeModel(path)
    candidates = []

    def wrong(images):  # another class than FP32's on every image
        return np.eye(10, dtype=np.float32)[(fp32(images).argmax(1) + 1) % 10]

    def quantized(fp32_nodes):  # a stand-in runtime: right once the two worst stay FP32
        candidates.append(fp32_nodes)
        return fp32 if len(fp32_nodes) >= 2 else wrong
    worst_two = [row.node for row in sensitivity[:2]]
    assert choose_fp32_convs(path, calibration, held_out, Int8Recipe(max_drop_points=0),
                             quantized, sensitivity) == worst_two
    assert candidates == [[], worst_two[:1], worst_two]
    assert choose_fp32_convs(path, calibration, held_out, Int8Recipe(keep_fp32=3),
                             quantized, sensitivity) == [row.node for row in sensitivity[:3]]


@pytest.mark.parametrize('calibration, message', [
    ([], 'no calibration images'),
    ([np.zeros((0, 2), np.float32)], 'no calibration images'),
])
def test_quantization_without_calibration_images_is_refused(calibration, message,
                                                            tmp_path):
    model = _linear_model(tmp_path / 'linear.onnx', [1, 0, 0, 1])
    with pytest.raises(ValueError, match=message):
        quantize_int8(model, str(tmp_path / 'int8.onnx'), calibration)
    assert not (tmp_path / 'int8.onnx').exists()


def test_a_model_without_a_conv_is_refused_in_one_line(tmp_path):
    model = _linear_model(tmp_path / 'linear.onnx', [1, 0, 0, 1])
    with pytest.raises(ValueError, match='has no Conv to quantize') as error:
        quantize_int8(model, str(tmp_path / 'int8.onnx'), [np.ones((2, 2), np.float32)])
    assert '\n' not in str(error.value)


def test_an_unknown_calibration_method_is_refused(small_fp32, tmp_path):
    path, calibration, _ = small_fp32
    with pytest.raises(ValueError, match='not offered for ONNX Runtime; choose one of '
                       'minmax, percentile, entropy'):
        quantize_int8(path, str(tmp_path / 'x.onnx'), calibration, method='kl')


@pytest.mark.parametrize('options, message', [
    (['--int8-recipe', 'keep_fp32=2'], 'add --quantize int8'),
    (['--int8-recipe', 'calibration_method=entropy'], 'add --quantize int8'),
    (['--int8-recipe', 'weight_bits=7'], 'add --quantize int8'),
    (['--int8-recipe', 'rounding=adaround'], 'add --quantize int8'),
    (['--quantize', 'int8', '--backend', 'openvino', '--int8-recipe', 'weight_bits=7'],
     'drop them for --backend openvino'),
    (['--quantize', 'int8', '--int8-recipe', 'keep_fp32=2', 'max_drop_points=0.5'],
     'pass one'),
    (['--quantize', 'int8', '--int8-recipe', 'keep_fp32=-1'], 'must not be negative'),
    (['--quantize', 'int8', '--backend', 'openvino', '--int8-recipe',
      'calibration_method=entropy'], 'the entropy method is an ONNX Runtime recipe'),
    (['--quantize', 'int8', '--int8-recipe', 'keep_fp3=2'],
     'unknown INT8 recipe key keep_fp3; valid keys: calibration_method, keep_fp32, '
     'max_drop_points, weight_bits, int8_kernels, accuracy_bound_points'),
    (['--quantize', 'int8', '--backend', 'openvino', '--int8-recipe',
      'int8_kernels=u8u8'], 'drop them for --backend openvino'),
    (['--quantize', 'int8', '--int8-recipe', 'accuracy_bound_points=-1'],
     'must not be negative'),
    # AdaRound left the product for the lab (benchmarks/lab/adaround.py).
    (['--quantize', 'int8', '--int8-recipe', 'rounding=adaround'],
     'error: --int8-recipe: unknown INT8 recipe key rounding; valid keys: calibration_method, '
     'keep_fp32, max_drop_points, weight_bits, int8_kernels, accuracy_bound_points\n'),
    (['--quantize', 'int8', '--backend', 'openvino', '--int8-recipe', 'rounding=adaround'],
     'unknown INT8 recipe key rounding; valid keys:'),
    (['--quantize', 'int8', '--int8-recipe', 'keep_fp32'],
     '--int8-recipe keep_fp32: write KEY=VALUE'),
])
def test_recipe_options_that_cannot_work_are_refused_before_any_work(options, message,
                                                                     tmp_path, capsys):
    from conftest import REPO_ROOT, load_tool
    pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')
    output = tmp_path / ('out.xml' if 'openvino' in options else 'out.onnx')
    with pytest.raises(SystemExit) as exit_info:
        pytorch2onnx.main([f'{REPO_ROOT}/configs/digits/repvgg-A0_digits.py', 'CKPT',
                           str(output), *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_the_int8_export_takes_every_knob_in_one_recipe():
    """At most 6 parameters: what the recipe holds is not a parameter of its own."""
    import dataclasses
    import inspect
    from mmrepvgg.deploy.quantization import export_int8
    assert list(inspect.signature(export_int8).parameters) == [
        'model', 'int8_path', 'calibration', 'held_out', 'recipe', 'overwrite']
    assert [field.name for field in dataclasses.fields(Int8Recipe)] == [
        'calibration_method', 'keep_fp32', 'max_drop_points', 'weight_bits', 'int8_kernels',
        'opset', 'accuracy_bound_points', 'progress']
    with pytest.raises(dataclasses.FrozenInstanceError):
        Int8Recipe().keep_fp32 = 2

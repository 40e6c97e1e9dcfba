"""The accuracy-bounded INT8 default: past the bound (1 top-1 point against FP32 on the
held-out images by default) export_int8 adds recipe steps, cheapest first, and says which; the
reference top-1 is PyTorch's FP32, the INT8 top-1 ONNX Runtime's on the written file."""
import dataclasses

import numpy as np
import pytest
import torch

from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import load_checkpoint
from mmrepvgg.deploy._onnx_eval import preprocessed_batches
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
from mmrepvgg.deploy.quantization import Int8Recipe, export_int8
from mmrepvgg.engine import load_repvgg_config
from mmrepvgg.models import reparameterize_model

from conftest import working_directory
from test_int8 import DIGITS_CONFIG

# One output channel of a conv inside a chain made this much larger and the next conv's
# matching input channel as much smaller: the same function, a per-tensor activation
# grid stretched over every other channel (what fused kernels do, exaggerated).
OUTLIER_FACTOR = 1000.0
OUTLIER_PAIR = ('stage_3.0', 'stage_3.1')
# The 1-epoch model has close runners-up, so plain INT8 already moves its top-1 by about
# 1-2 points on the 360 test images; a bound of 3 points tells that apart from what the
# planted outlier costs (tens of points).
OUTLIER_BOUND_POINTS = 3.0


def top1_points(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100 * float(np.mean(logits.argmax(1) == labels))


@pytest.fixture(scope='module')
def digits_data(digits_workspace):
    """``(calibration batches, held-out images, held-out labels)`` of the digits config:
    64 training images, the 360 test images."""
    cfg = load_repvgg_config(DIGITS_CONFIG)
    with working_directory(digits_workspace):
        calibration = [batch.images for batch in preprocessed_batches(
            cfg, 'train_dataloader', 64, shuffle=True, pipeline_from='test_dataloader')]
        held_out = [(batch.images, batch.labels) for batch in preprocessed_batches(
            cfg, 'test_dataloader', 360, shuffle=False)]
    images, labels = (np.concatenate(part) for part in zip(*held_out))
    return calibration, images, labels


@pytest.fixture(scope='module')
def outlier_model(digits_train_checkpoint):
    """The trained digits model, fused, with one planted outlier channel."""
    model = build_train_model(load_repvgg_config(DIGITS_CONFIG))
    load_checkpoint(model, digits_train_checkpoint, 'convert')
    model = reparameterize_model(model)
    first, second = (model.backbone.get_submodule(name).branch_reparam
                     for name in OUTLIER_PAIR)
    with torch.no_grad():
        first.weight[0] *= OUTLIER_FACTOR
        first.bias[0] *= OUTLIER_FACTOR
        second.weight[:, 0] /= OUTLIER_FACTOR
    return model.eval()


def test_an_outlier_channel_that_plain_minmax_loses_to_is_rescued_by_equalization(
        outlier_model, digits_data, tmp_path):
    calibration, images, labels = digits_data
    with torch.no_grad():
        fp32_top1 = top1_points(outlier_model(torch.from_numpy(images)).numpy(), labels)
    plain_path, bounded_path = str(tmp_path / 'plain.onnx'), str(tmp_path / 'bounded.onnx')
    held_out = [(images, labels)]

    plain = export_int8(outlier_model, plain_path, calibration, held_out,
                        Int8Recipe(accuracy_bound_points=None))
    plain_top1 = top1_points(OnnxRuntimeModel(plain_path)(images), labels)
    assert plain.steps == () and fp32_top1 - plain_top1 > OUTLIER_BOUND_POINTS

    report = export_int8(outlier_model, bounded_path, calibration, held_out,
                         Int8Recipe(accuracy_bound_points=OUTLIER_BOUND_POINTS))
    bounded_top1 = top1_points(OnnxRuntimeModel(bounded_path)(images), labels)
    assert report.steps == ('cross-layer equalization', )
    assert fp32_top1 - bounded_top1 <= OUTLIER_BOUND_POINTS
    outcome = report.describe_outcome()
    assert outcome.startswith('INT8 recipe: minmax calibration + cross-layer equalization;')
    assert outcome.endswith('within the 3-point bound')
    assert report.cpu and report.bound_points == OUTLIER_BOUND_POINTS


def test_without_held_out_images_nothing_is_measured_and_the_outcome_says_so(
        outlier_model, digits_data, tmp_path):
    calibration, _, _ = digits_data
    report = export_int8(outlier_model, str(tmp_path / 'a.onnx'), calibration)
    assert report.steps == () and report.bound_points is None
    assert report.describe_outcome() == ('INT8 recipe: minmax calibration; accuracy not '
                                         'checked (no held-out images)')


@pytest.mark.parametrize('points', [-1, True, 'one'])
def test_a_bound_that_is_no_number_of_points_is_refused(points):
    with pytest.raises(ValueError, match='accuracy_bound_points'):
        Int8Recipe(accuracy_bound_points=points)


@pytest.mark.parametrize('written', ['none', 'None'])
def test_a_bound_of_none_on_the_command_line_turns_the_check_off(written):
    assert Int8Recipe.from_options({'accuracy_bound_points': written}
                                   ).accuracy_bound_points is None


def test_the_default_recipe_is_bounded_at_one_point():
    assert Int8Recipe().accuracy_bound_points == 1.0
    assert dataclasses.replace(Int8Recipe(), accuracy_bound_points=None
                               ).accuracy_bound_points is None

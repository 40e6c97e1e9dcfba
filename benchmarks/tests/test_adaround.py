"""Learned rounding (AdaRound, a lab instrument) of the deploy convs: every weight goes one
way or the other to its channel's INT8 grid and nowhere else, the grid is the one ONNX
Runtime computes (the product's nearest-rounding export of the rounded model holds exactly
these integers), the fitted output is closer to FP32 than nearest rounding gives, and bad
requests are one line. References: torch's own conv and rounding, and the integers ONNX
Runtime writes (read with onnx)."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from lab.adaround import _kernel_scale as kernel_scale
from lab.adaround import _learned_kernel as learned_kernel
from lab.adaround import _rectified_sigmoid as rectified_sigmoid
from lab.adaround import _rounding_penalty as rounding_penalty
from lab.adaround import _RoundingSchedule as RoundingSchedule
from lab.adaround import adaround
from lab.synthetic import randomize_batch_norms_
from mmrepvgg.deploy.quantization import Int8Recipe, export_int8
from mmrepvgg.models import build_model, repvgg_classifier_cfg, reparameterize_model

from conftest import int8_conv_weights

SMALL_ARCH = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.5, 0.5, 0.5, 1))  # 7 convs
WEIGHT_MAX = {8: 127, 7: 64}  # ONNX Runtime's int8 and reduce_range weight ranges
FAST = RoundingSchedule(iterations=40, batch_size=8)


@pytest.fixture(scope='module')
def small_model():
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg(
        SMALL_ARCH, num_classes=10))).eval()
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator).numpy()
                   for _ in range(2)]
    return model, calibration


@pytest.fixture(scope='module', params=[8, 7])
def rounded(request, small_model):
    model, calibration = small_model
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rounded_model = adaround(model, calibration, request.param, FAST)
    assert all(torch.equal(before[name], value)
               for name, value in model.state_dict().items())  # the input is not changed
    return request.param, rounded_model


def _convs(model: nn.Module) -> list:
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def test_the_offset_is_a_stretched_sigmoid_clipped_to_0_1_and_its_penalty_favours_0_or_1():
    logits = torch.linspace(-20, 20, 401)
    offsets = rectified_sigmoid(logits)
    assert offsets.min() == 0 and offsets.max() == 1  # reached at finite logits
    assert torch.all(offsets[1:] >= offsets[:-1])
    middle = slice(180, 221)  # logits -2 to 2: not clipped
    assert torch.allclose(offsets[middle], torch.sigmoid(logits[middle]) * 1.2 - 0.1)
    assert rounding_penalty(torch.tensor([0.0, 1.0]), 2.0) == 0
    assert rounding_penalty(torch.tensor([0.5, 0.5, 0.5]), 2.0) == 3
    assert rounding_penalty(torch.tensor([0.25]), 20.0) > rounding_penalty(
        torch.tensor([0.25]), 2.0)  # a high exponent penalises offsets near 0 or 1 less


def test_each_weight_moves_to_the_level_just_below_or_just_above_it(small_model, rounded):
    bits, rounded_model = rounded
    weight_max = WEIGHT_MAX[bits]
    original = _convs(reparameterize_model(small_model[0]))
    changed = 0
    for before, after in zip(original, _convs(rounded_model), strict=True):
        weight = before.weight.detach()
        step = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / weight_max
        levels = after.weight.detach() / step
        assert torch.allclose(levels, torch.round(levels), atol=1e-3)  # on the grid
        levels = torch.round(levels)
        assert levels.abs().max() <= weight_max
        # each channel's largest weight keeps its level: the runtime's scale is unchanged
        assert torch.equal(levels.abs().amax(dim=(1, 2, 3)),
                           torch.full((len(levels), ), float(weight_max)))
        assert torch.all((levels == torch.floor(weight / step))
                         | (levels == torch.ceil(weight / step)))
        changed += int((levels != torch.round(weight / step)).sum())
        assert torch.equal(after.bias, before.bias)
    assert changed > 0  # not nearest rounding again


def test_the_products_nearest_export_of_the_rounded_model_writes_the_learned_integers(
        small_model, rounded, tmp_path):
    """The lab's recipe: AdaRound first, then export_int8 as users run it (nearest)."""
    bits, rounded_model = rounded
    calibration = [torch.randn(4, 3, 32, 32).numpy()]
    int8_path = tmp_path / 'int8.onnx'
    export_int8(rounded_model, str(int8_path), calibration,
                recipe=Int8Recipe(weight_bits=str(bits)))
    int8_kernels = int8_conv_weights(int8_path)
    convs, original = _convs(rounded_model), _convs(reparameterize_model(small_model[0]))
    assert len(int8_kernels) == len(convs) == len(original)
    for kernel, conv, before in zip(int8_kernels, convs, original):
        weight = conv.weight.detach()
        learned_codes = torch.round(weight / kernel_scale(weight, WEIGHT_MAX[bits]).view(
            -1, 1, 1, 1)).int().numpy()
        assert np.array_equal(kernel.astype(np.int32), learned_codes)
    # ... and those are learned levels, not the nearest ones of the unrounded model.
    nearest = [torch.round(conv.weight.detach() / kernel_scale(
        conv.weight, WEIGHT_MAX[bits]).view(-1, 1, 1, 1)).int().numpy() for conv in original]
    assert any(not np.array_equal(kernel, levels)
               for kernel, levels in zip(int8_kernels, nearest))


def test_a_fitted_conv_reproduces_its_fp32_output_better_than_nearest_rounding():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    inputs = functional.relu(torch.randn(64, 8, 8, 8))
    targets = functional.relu(conv(inputs)).detach()
    kernel = learned_kernel(conv, inputs, targets, nn.ReLU(), 64,
                            RoundingSchedule(iterations=300))
    step = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / 64
    nearest = torch.round(conv.weight.detach() / step) * step

    def error(weight):
        output = functional.relu(functional.conv2d(inputs, weight, conv.bias, padding=1))
        return functional.mse_loss(output, targets).item()
    assert error(kernel) < 0.95 * error(nearest)


@pytest.mark.parametrize('problem, arguments, message', [
    ('six bits', dict(weight_bits=6), '8 or 7 bits'),
    ('no images', dict(calibration=[]), 'no calibration images'),
    ('no block', dict(model=nn.Sequential(nn.Conv2d(3, 4, 3))), 'no RepVGG block'),
])
def test_a_request_that_cannot_be_rounded_is_one_line(small_model, problem, arguments,
                                                      message):
    model, calibration = small_model
    request = dict(model=model, calibration=calibration, weight_bits=8, schedule=FAST)
    request.update(arguments)
    with pytest.raises(ValueError, match=message) as error:
        adaround(**request)
    assert '\n' not in str(error.value)

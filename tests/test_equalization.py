"""Cross-layer equalization of the deploy form: the function is unchanged (float64, against
the unequalized model's own outputs), channel ranges become more equal, grouped convs
and SE blocks are handled, and a wrong rescaling is refused."""
import copy

import pytest
import torch
from torch import nn

from mmrepvgg.deploy import _equalization as equalization
from mmrepvgg.deploy._equalization import _EqualizationError as EqualizationError
from mmrepvgg.deploy._equalization import _input_channel_ranges as input_channel_ranges
from mmrepvgg.deploy._equalization import _output_channel_ranges as output_channel_ranges
from mmrepvgg.deploy._equalization import _verify_equalization as verify_equalization
from mmrepvgg.deploy._equalization import equalization_scales, equalize_model
from mmrepvgg.models import RepVGG, build_model, repvgg_classifier_cfg

# Small widths keep each published variant's depth, groups and SE layers.
BASE_CHANNELS = 8
IMAGES = (2, 3, 64, 64)


def deploy_convs(model: nn.Module):
    return [module.branch_reparam for module in model.modules()
            if hasattr(module, 'branch_reparam')]


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-normal kernels with output channels scaled by factors in [e^-2, e^2] (uneven
    ranges, as fused kernels have) and random biases, in float64."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    for conv in deploy_convs(model):
        out_channels, fan_in = conv.weight.shape[0], conv.weight[0].numel()
        factors = torch.empty(out_channels, dtype=torch.float64).uniform_(
            -2, 2, generator=generator).exp()
        weight = torch.randn(conv.weight.shape, generator=generator, dtype=torch.float64)
        conv.weight.copy_(weight * (2 / fan_in) ** 0.5 * factors.reshape(-1, 1, 1, 1))
        conv.bias.copy_(0.1 * torch.randn(out_channels, generator=generator,
                                          dtype=torch.float64))
    return model


@torch.no_grad()
def outputs(model: nn.Module, images: torch.Tensor):
    result = model(images)
    return list(result) if isinstance(result, tuple) else [result]


def relative_error(reference, candidate) -> float:
    return max(((ref - out).abs().max() / ref.abs().max()).item()
               for ref, out in zip(reference, candidate))


MODELS = {
    'A0 classifier': lambda: build_model(repvgg_classifier_cfg(
        'A0', deploy=True, num_classes=10, base_channels=BASE_CHANNELS)),
    'B1g4 backbone, every stage an output': lambda: RepVGG(
        'B1g4', base_channels=BASE_CHANNELS, deploy=True, out_indices=(0, 1, 2, 3)),
    'B2g4 qarepvgg backbone': lambda: RepVGG(
        'B2g4', base_channels=BASE_CHANNELS, deploy=True, block_type='qarepvgg'),
    'D2se backbone': lambda: RepVGG('D2se', base_channels=BASE_CHANNELS, deploy=True),
}


@pytest.mark.parametrize('name', MODELS)
def test_equalized_model_computes_the_original_function_in_float64(name):
    model = randomize(MODELS[name]())
    images = torch.randn(IMAGES, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    expected = outputs(model, images)
    equalized, report = equalize_model(model)
    assert relative_error(expected, outputs(equalized, images)) < 1e-12
    assert report.max_relative_error < 1e-12
    assert len(report.equalized) + len(report.skipped) == len(deploy_convs(model)) - 1


def test_train_form_model_is_fused_then_equalized():
    model = build_model(repvgg_classifier_cfg('A0', num_classes=10,
                                              base_channels=BASE_CHANNELS)).double()
    images = torch.randn(IMAGES, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    expected = outputs(model, images)
    equalized, report = equalize_model(model)
    assert relative_error(expected, outputs(equalized, images)) < 1e-12
    assert len(report.equalized) == 21  # 22 fused convs of A0, one chain


def test_float32_model_comes_back_float32_rounded_once():
    model = randomize(MODELS['A0 classifier']()).float()
    images = torch.randn(IMAGES, generator=torch.Generator().manual_seed(1))
    equalized, _ = equalize_model(model)
    assert all(param.dtype == torch.float32 for param in equalized.parameters())
    # float32 rounding of the rescaled weights only.
    assert relative_error(outputs(model, images), outputs(equalized, images)) < 1e-5


def test_a_copy_by_default_the_model_itself_with_inplace():
    model = randomize(MODELS['A0 classifier']())
    before = copy.deepcopy(model.state_dict())
    equalized, _ = equalize_model(model)
    assert equalized is not model
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    equalized_inplace, _ = equalize_model(model, inplace=True)
    assert equalized_inplace is model
    assert not torch.equal(before['backbone.stem.branch_reparam.weight'],
                           model.backbone.stem.branch_reparam.weight)


def spread(ranges: torch.Tensor) -> float:
    """max / min of per-channel ranges: 1 when all are equal."""
    return (ranges.max() / ranges.min()).item()


@torch.no_grad()
def test_planted_outlier_channel_is_evened_out():
    """An outlier output channel of the stem (x100, the next conv's input channel /100:
    the same function) stretches the stem's per-channel ranges; equalization moves it
    back between the two convs."""
    model = randomize(RepVGG('A0', base_channels=BASE_CHANNELS, deploy=True))
    stem, first = model.stem.branch_reparam, model.stage_1[0].branch_reparam
    stem.weight[0] *= 100
    stem.bias[0] *= 100
    first.weight[:, 0] /= 100
    # The ranges as the paper defines them, by torch's own reductions.
    stem_before = stem.weight.abs().flatten(1).max(dim=1).values
    first_before = first.weight.abs().transpose(0, 1).flatten(1).max(dim=1).values

    equalized, _ = equalize_model(model)
    stem_after = equalized.stem.branch_reparam.weight.abs().flatten(1).max(dim=1).values
    first_after = (equalized.stage_1[0].branch_reparam.weight.abs().transpose(0, 1)
                   .flatten(1).max(dim=1).values)
    assert spread(stem_before) > 100
    assert spread(stem_after) < spread(stem_before) / 20
    assert spread(first_after) < spread(first_before) / 20


def test_scales_give_both_convs_the_geometric_mean_range():
    output_ranges = torch.tensor([4.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    input_ranges = torch.tensor([1.0, 9.0, 0.5, 2.0], dtype=torch.float64)
    scales = equalization_scales(output_ranges, input_ranges)
    balanced = torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64)  # sqrt(r1 * r2)
    assert torch.allclose(output_ranges[:3] / scales[:3], balanced)
    assert torch.allclose(input_ranges[:3] * scales[:3], balanced)
    assert scales[3] == 1  # a dead channel is left alone


def test_input_channel_ranges_of_a_grouped_kernel():
    """Reference: the grouped conv written as a dense one (zero outside its groups)."""
    groups, out_channels, in_channels = 4, 8, 12
    kernel = torch.randn(out_channels, in_channels // groups, 3, 3,
                         generator=torch.Generator().manual_seed(0))
    dense = torch.zeros(out_channels, in_channels, 3, 3)
    out_per_group, in_per_group = out_channels // groups, in_channels // groups
    for group in range(groups):
        rows = slice(group * out_per_group, (group + 1) * out_per_group)
        dense[rows, group * in_per_group:(group + 1) * in_per_group] = kernel[rows]
    dense_conv = nn.functional.conv2d
    images = torch.randn(1, in_channels, 5, 5)
    assert torch.allclose(dense_conv(images, kernel, groups=groups),
                          dense_conv(images, dense), atol=1e-5)
    assert torch.equal(input_channel_ranges(kernel, groups), dense.abs().amax(dim=(0, 2, 3)))
    assert torch.equal(output_channel_ranges(kernel), dense.abs().amax(dim=(1, 2, 3)))


def test_d2se_pairs_are_skipped_by_name_and_left_unchanged():
    model = randomize(MODELS['D2se backbone']())
    equalized, report = equalize_model(model)
    assert report.equalized == ()
    assert len(report.skipped) == 47  # 48 fused convs
    assert report.skipped[0] == 'stem -> stage_1.0 (stem.se_layer between them)'
    assert all('se_layer between them' in pair for pair in report.skipped)
    assert all(torch.equal(model.state_dict()[key], value)
               for key, value in equalized.state_dict().items())


def test_stage_outputs_of_the_backbone_are_not_rescaled():
    _, report = equalize_model(randomize(MODELS['B1g4 backbone, every stage an output']()))
    assert report.skipped == (
        'stage_1.3 -> stage_2.0 (stage_1.3 is a backbone output (out_indices))',
        'stage_2.5 -> stage_3.0 (stage_2.5 is a backbone output (out_indices))',
        'stage_3.15 -> stage_4.0 (stage_3.15 is a backbone output (out_indices))')


@torch.no_grad()
def scale_without_inverse(model: nn.Module, sweeps: int):
    """A wrong equalization: conv_1's output channels divided, conv_2 left as it was."""
    for conv in deploy_convs(model)[:-1]:
        scales = torch.linspace(1, 2, conv.weight.shape[0], dtype=conv.weight.dtype)
        conv.weight /= scales.reshape(-1, 1, 1, 1)
        conv.bias /= scales
    return ('made up', ), ()


@torch.no_grad()
def scale_the_wrong_group(model: nn.Module, sweeps: int):
    """A wrong equalization of grouped convs: conv_2's columns scaled in the wrong order."""
    convs = deploy_convs(model)
    for conv_1, conv_2 in zip(convs, convs[1:]):
        scales = torch.linspace(1, 2, conv_1.weight.shape[0], dtype=conv_1.weight.dtype)
        conv_1.weight /= scales.reshape(-1, 1, 1, 1)
        conv_1.bias /= scales
        per_group = conv_2.weight.shape[1]
        conv_2.weight *= scales.flip(0)[:per_group].reshape(1, -1, 1, 1)
    return ('made up', ), ()


@pytest.mark.parametrize('wrong_equalization', [scale_without_inverse, scale_the_wrong_group])
def test_a_wrong_equalization_is_refused_and_the_model_left_unchanged(
        monkeypatch, wrong_equalization):
    model = randomize(MODELS['B1g4 backbone, every stage an output']())
    before = copy.deepcopy(model.state_dict())
    monkeypatch.setattr(equalization, '_equalize_chains', wrong_equalization)
    with pytest.raises(EqualizationError, match=r'^equalized and original outputs differ by '
                       r'\S+ in float64 \(relative, tolerance 1e-10\): the equalization is '
                       r'wrong; model left unchanged$'):
        equalize_model(model, inplace=True)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_verifier_accepts_the_model_itself():
    model = randomize(MODELS['A0 classifier']())
    assert verify_equalization(model, copy.deepcopy(model), IMAGES) == 0

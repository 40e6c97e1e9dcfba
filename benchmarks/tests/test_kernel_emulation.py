"""The integer emulation of INT8 convs: exact, it is the fake-quantized conv; with int16
pair saturation, it clips exactly where hand arithmetic says it must."""
import torch
from torch import nn

from lab.kernel_emulation import IntegerConvEmulation, integer_conv
from lab.adaround import _FakeQuantizedConv as FakeQuantizedConv


def _calibrated(conv: nn.Conv2d, images: torch.Tensor) -> FakeQuantizedConv:
    wrapper = FakeQuantizedConv(conv)
    wrapper(images)  # observe the range
    wrapper.observing = False
    return wrapper


def test_exact_integer_conv_is_the_fake_quantized_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    images = torch.randn(2, 6, 9, 7)
    wrapper = _calibrated(conv, images)
    with torch.no_grad():
        expected = wrapper(images)
        actual, share = integer_conv(wrapper, images, saturate_pairs=False)
    assert actual.shape == expected.shape == (2, 5, 5, 4) and share == 0
    assert (actual - expected).abs().max() < 1e-4 * expected.abs().max()


def test_saturated_pairs_clip_at_int16():
    """Inputs at 255 (range [0, 1]) and weights at 127: each pair is 2 * 255 * 127 =
    64770, clipped to 32767; a 1x1 conv over 4 channels sums two pairs."""
    conv = nn.Conv2d(4, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    images = torch.ones(1, 4, 1, 1)
    wrapper = _calibrated(conv, images)
    input_scale, weight_scale = 1 / 255, 1 / 127
    exact, _ = integer_conv(wrapper, images, saturate_pairs=False)
    clipped, share = integer_conv(wrapper, images, saturate_pairs=True)
    assert torch.allclose(exact, torch.tensor(4 * 255 * 127 * input_scale * weight_scale))
    assert torch.allclose(clipped, torch.tensor(2 * 32767 * input_scale * weight_scale))
    assert share == 1.0


def test_emulation_replaces_every_wrapper_while_active_only():
    torch.manual_seed(0)
    images = torch.rand(1, 4, 4, 4)
    model = nn.Sequential(_calibrated(nn.Conv2d(4, 4, 3, padding=1), images), nn.ReLU())
    with torch.no_grad():
        fake = model(images)
        with IntegerConvEmulation(model, saturate_pairs=False) as emulation:
            emulated = model(images)
        after = model(images)
    assert len(emulation.saturated_share) == 1
    assert torch.equal(after, fake)
    assert (emulated - fake).abs().max() < 1e-4 * fake.abs().max()


def test_seven_bit_weights_cannot_saturate_a_pair():
    """The same worst case with weights within +-64: each pair is 2 * 255 * 64 = 32640,
    inside int16, so saturated and exact sums are equal."""
    conv = nn.Conv2d(4, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    images = torch.ones(1, 4, 1, 1)
    wrapper = _calibrated(conv, images)
    exact, _ = integer_conv(wrapper, images, saturate_pairs=False, weight_max=64)
    saturated, share = integer_conv(wrapper, images, saturate_pairs=True, weight_max=64)
    assert torch.allclose(exact, torch.tensor(4 * 255 * 64 / (255 * 64)))
    assert torch.equal(saturated, exact) and share == 0.0


def test_seven_bit_emulation_is_torchs_fake_quantization_at_64_levels():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    images = torch.randn(2, 6, 8, 8)
    wrapper = _calibrated(conv, images)
    input_scale = float(wrapper.input_max - wrapper.input_min) / 255
    zero_point = int(round(float(-wrapper.input_min) / input_scale))
    weight_scale = conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 64
    with torch.no_grad():
        expected = nn.functional.conv2d(
            torch.fake_quantize_per_tensor_affine(images, input_scale, zero_point, 0, 255),
            torch.fake_quantize_per_channel_affine(
                conv.weight, weight_scale, torch.zeros(5, dtype=torch.int32), 0, -64, 64),
            conv.bias, padding=1)
        actual, share = integer_conv(wrapper, images, saturate_pairs=True, weight_max=64)
    assert share == 0.0
    assert (actual - expected).abs().max() < 1e-4 * expected.abs().max()

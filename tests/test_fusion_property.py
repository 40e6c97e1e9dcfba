"""Property test of the fusion: for random block shapes, block types (RepVGG, QARepVGG)
and BN statistics, the deploy block computes the train block's eval-mode function.

Bound: ``max |train - deploy| <= TOLERANCE[dtype] * (1 + max |train|)``, with
float64 1e-9 and float32 1e-4. Why these: the fused kernel is exact up to one rounding
per weight (the fusion sums in float64), so the remaining difference is the convolution's
own summation-order rounding over ``C_in // groups * 9`` terms (<= 72 here) whose
magnitudes the BN scale ``gamma / sqrt(var + eps)`` can blow up to ~1e3 for the tiniest
variances; 1e-4 (float32) and 1e-9 (float64) leave a margin above what that gives.
"""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch.nn.modules.batchnorm import _BatchNorm

from mmrepvgg.models.repvgg import BLOCK_TYPES

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


@st.composite
def block_settings(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    in_channels = groups * draw(st.integers(1, 4))
    with_identity = draw(st.booleans())
    out_channels = in_channels if with_identity else groups * draw(st.integers(1, 4))
    stride = 1 if with_identity else draw(st.sampled_from([1, 2]))
    return dict(block_type=draw(st.sampled_from(sorted(BLOCK_TYPES))),
                in_channels=in_channels, out_channels=out_channels, stride=stride,
                dilation=draw(st.sampled_from([1, 2])), groups=groups)


# Variances from "dead channel" (1e-8) to exploding activations (1e4); eps as used in
# practice (1e-5 default, 1e-3 official-style) and tiny.
variances = st.sampled_from([1e-8, 1e-4, 1e-2, 1.0, 1e2, 1e4])
epsilons = st.sampled_from([1e-10, 1e-5, 1e-3])


@torch.no_grad()
def randomise_norms(block, variance_scale, eps, generator, dtype):
    for norm in block.modules():
        if not isinstance(norm, _BatchNorm):
            continue
        channels = norm.num_features
        norm.eps = eps
        norm.running_mean.copy_(torch.randn(channels, generator=generator, dtype=dtype))
        norm.running_var.copy_(variance_scale * torch.rand(
            channels, generator=generator, dtype=dtype).add_(0.5))
        norm.weight.copy_(torch.rand(channels, generator=generator, dtype=dtype) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=generator, dtype=dtype))


def check_block_fusion(settings_, variance, eps, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    settings_ = dict(settings_)
    block = BLOCK_TYPES[settings_.pop('block_type')](**settings_).to(dtype).eval()
    randomise_norms(block, variance, eps, generator, dtype)
    images = torch.randn(2, settings_['in_channels'], 9, 9, generator=generator, dtype=dtype)
    with torch.no_grad():
        expected = block(images)
        block.switch_to_deploy()
        actual = block(images)
    assert actual.shape == expected.shape
    bound = TOLERANCE[dtype] * (1 + float(expected.abs().max()))
    assert float((expected - actual).abs().max()) <= bound


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_settings(), variances, epsilons, st.integers(0, 2**31 - 1))
def test_deploy_block_matches_train_block_in_float64(settings_, variance, eps, seed):
    check_block_fusion(settings_, variance, eps, seed, torch.float64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_settings(), variances, epsilons, st.integers(0, 2**31 - 1))
def test_deploy_block_matches_train_block_in_float32(settings_, variance, eps, seed):
    check_block_fusion(settings_, variance, eps, seed, torch.float32)

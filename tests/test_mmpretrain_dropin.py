"""Our RepVGG replaces mmpretrain's: same arguments, same archs, same errors, same
weights. mmpretrain 1.2.0's own classes serve as the oracle."""
import inspect

import pytest
import torch
from mmpretrain.models.backbones.repvgg import RepVGG as MMPretrainRepVGG
from mmpretrain.models.backbones.repvgg import RepVGGBlock as MMPretrainRepVGGBlock
from torch import nn

from mmrepvgg.models import RepVGG, RepVGGBlock
from mmrepvgg.models.arch import resolve_arch
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_


def parameter_names(cls) -> set:
    return set(inspect.signature(cls.__init__).parameters) - {'self'}


@pytest.mark.parametrize('ours,theirs', [(RepVGG, MMPretrainRepVGG),
                                         (RepVGGBlock, MMPretrainRepVGGBlock)],
                         ids=['backbone', 'block'])
def test_every_mmpretrain_constructor_argument_is_accepted(ours, theirs):
    assert parameter_names(theirs) <= parameter_names(ours)


@pytest.mark.parametrize('name', sorted(MMPretrainRepVGG.arch_settings))
def test_every_mmpretrain_arch_name_builds_the_same_architecture(name):
    theirs = {'stem_channels': 64, **MMPretrainRepVGG.arch_settings[name]}
    ours = resolve_arch(name)
    assert list(ours['num_blocks']) == list(theirs['num_blocks'])
    assert list(ours['width_factor']) == list(theirs['width_factor'])
    assert (ours['group_layer_map'] or None) == (theirs['group_layer_map'] or None)
    assert ours['se_cfg'] == theirs['se_cfg']
    assert ours['stem_channels'] == theirs['stem_channels']


@pytest.mark.parametrize('kwargs', [
    dict(arch='A3'),
    dict(arch=dict(num_blocks=[2, 4, 14, 1], width_factor=[0.75, 0.75, 0.75])),
    dict(arch='A0', strides=(1, 1, 1)),
    dict(arch='A0', dilations=(1, 1, 2)),
    dict(arch='A0', out_indices=(5, )),
    dict(arch=dict(num_blocks=[1, 1, 1, 1], width_factor=[1, 1, 1, 1],
                   group_layer_map={9: 2})),
])
def test_arguments_mmpretrain_asserts_on_raise_an_assertion_error_here_too(kwargs):
    with pytest.raises(AssertionError):
        RepVGG(**kwargs)


def test_an_arch_dict_without_width_factor_raises_key_error_as_in_mmpretrain():
    with pytest.raises(KeyError, match='width_factor'):
        RepVGG(dict(num_blocks=[2, 4, 14, 1]))


def test_block_keeps_its_arguments_as_attributes():
    se_cfg = dict(ratio=4, divisor=1)
    block = RepVGGBlock(8, 8, padding=1, se_cfg=se_cfg, conv_cfg=dict(type='Conv2d'))
    assert block.se_cfg == se_cfg and block.conv_cfg == dict(type='Conv2d')
    assert block.padding == block.dilation == 1
    assert RepVGGBlock(8, 8).se_cfg is None
    assert RepVGG('A0').stages == ['stage_1', 'stage_2', 'stage_3', 'stage_4']


def test_padding_other_than_dilation_is_refused():
    with pytest.raises(ValueError, match='padding == dilation'):
        RepVGGBlock(8, 8, padding=1, dilation=2)


@pytest.mark.parametrize('kwargs', [dict(padding=2, dilation=2),
                                    dict(padding_mode='reflect'),
                                    dict(conv_cfg=dict(type='Conv2d'), groups=2)])
def test_block_variants_mmpretrain_offers_fuse_exactly(kwargs):
    torch.manual_seed(0)
    block = randomize_batch_norms_(RepVGGBlock(8, 8, **kwargs).to(torch.float64)).eval()
    assert block.branch_norm is not None
    images = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        train_output = block(images)
        block.switch_to_deploy()
        assert max_relative_error(train_output, block(images)) <= 1e-12
    assert block.branch_reparam.padding_mode == kwargs.get('padding_mode', 'zeros')


def equal_models(arch, **kwargs):
    """mmpretrain's RepVGG with random BN statistics, and ours holding its weights."""
    torch.manual_seed(0)
    theirs = randomize_batch_norms_(MMPretrainRepVGG(arch, **kwargs))
    theirs.eval()  # mmpretrain's train() returns None, so eval() cannot be chained
    ours = RepVGG(arch, **kwargs).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


@pytest.mark.parametrize('arch', ['A0', 'yolox-pai-small'])
def test_mmpretrain_weights_with_pyramid_pooling_load_and_compute_the_same(arch):
    theirs, ours = equal_models(arch, add_ppf=True)
    assert isinstance(ours.ppf.maxpool, nn.MaxPool2d)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_relative_error(theirs(images), ours(images)) <= 1e-5


@pytest.mark.parametrize('deploy', [False, True], ids=['train', 'deploy'])
def test_mmpretrains_extra_grouped_arch_has_its_tensors(deploy):
    """B2g2 (no published weights) has exactly the tensors of mmpretrain's B2g2, shapes
    compared on the meta device; its blocks compute as the published grouped variants'
    (tests/test_repvgg.py compares B1g2 and B2g4 with mmpretrain numerically)."""
    with torch.device('meta'):
        theirs = MMPretrainRepVGG('B2g2', deploy=deploy)
        ours = RepVGG('B2g2', deploy=deploy)
    assert ours.stage_1[1].groups == 2 and ours.stage_1[0].groups == 1
    assert {key: value.shape for key, value in ours.state_dict().items()} == \
        {key: value.shape for key, value in theirs.state_dict().items()}

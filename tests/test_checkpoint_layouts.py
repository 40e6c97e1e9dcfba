"""Checkpoints of every source layout load into this project's RepVGG and compute the
same function as the model that wrote them; deploy checkpoints export to the official
layout.

Oracles: the official repository's model, rebuilt here from its published layout
description (module names, identity only where in == out and stride 1, groups at global
blocks 2, 4, ..., SE after the summed branches); timm's ``repvgg_*`` and mmpretrain's
``RepVGG`` as installed.
"""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from checkpoint_fixtures import write_classifier_config
from mmengine.config import Config
from mmengine.registry import DefaultScope
from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg
from timm.utils.model import reparameterize_model
from torch import nn

from mmrepvgg.apis import convert_checkpoint
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint, load_checkpoint_file
from mmrepvgg.checkpoint._layouts import (LAYOUTS, OFFICIAL_LAYOUT, LayoutError, detect_layout,
                                          from_project_layout, to_project_layout)
from mmrepvgg.models import RepVGG, reparameterize_blocks, repvgg_classifier_cfg
from mmrepvgg.models.arch import ARCH_SETTINGS, resolve_arch
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_

# The published official RepVGG-A0 key list has 351 train-form and 46 deploy-form keys.
OFFICIAL_A0_TRAIN_KEYS, OFFICIAL_A0_DEPLOY_KEYS = 351, 46
OFFICIAL_A0_SAMPLE_SHAPES = {
    'stage0.rbr_dense.conv.weight': (48, 3, 3, 3),
    'stage1.0.rbr_1x1.bn.running_mean': (48, ),
    'stage1.1.rbr_identity.running_var': (48, ),
    'stage3.13.rbr_dense.conv.weight': (192, 192, 3, 3),
    'stage4.0.rbr_1x1.conv.weight': (1280, 192, 1, 1),
    'linear.weight': (1000, 1280),
}
SMALL_SE_ARCH = dict(num_blocks=(2, 2, 1, 1), width_factor=(0.5, 0.5, 0.5, 0.5),
                     se_cfg=dict(ratio=16, divisor=1), stem_channels=32)


class OfficialSE(nn.Module):
    def __init__(self, channels, internal):
        super().__init__()
        self.down = nn.Conv2d(channels, internal, 1, bias=True)
        self.up = nn.Conv2d(internal, channels, 1, bias=True)

    def forward(self, inputs):
        scale = F.adaptive_avg_pool2d(inputs, 1)
        return inputs * torch.sigmoid(self.up(F.relu(self.down(scale))))


def official_conv_bn(in_channels, out_channels, kernel_size, stride, groups):
    branch = nn.Sequential()
    branch.add_module('conv', nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                        kernel_size // 2, groups=groups, bias=False))
    branch.add_module('bn', nn.BatchNorm2d(out_channels))
    return branch


class OfficialBlock(nn.Module):
    """The official RepVGGBlock, module names as published."""

    def __init__(self, in_channels, out_channels, stride, groups, deploy, use_se):
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.rbr_reparam = nn.Conv2d(in_channels, out_channels, 3, stride, 1,
                                         groups=groups, bias=True)
        else:
            self.rbr_identity = (nn.BatchNorm2d(in_channels)
                                 if in_channels == out_channels and stride == 1 else None)
            self.rbr_dense = official_conv_bn(in_channels, out_channels, 3, stride, groups)
            self.rbr_1x1 = official_conv_bn(in_channels, out_channels, 1, stride, groups)
        self.se = OfficialSE(out_channels, out_channels // 16) if use_se else nn.Identity()

    def forward(self, inputs):
        if self.deploy:
            return F.relu(self.se(self.rbr_reparam(inputs)))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(inputs)
        return F.relu(self.se(self.rbr_dense(inputs) + self.rbr_1x1(inputs) + identity))


class OfficialRepVGG(nn.Module):
    """The official RepVGG: stage0 (stem), stage1..4, global pooling, ``linear``."""

    def __init__(self, arch, num_classes, deploy=False):
        super().__init__()
        arch = resolve_arch(arch)
        groups_of = arch['group_layer_map'] or {}
        use_se = arch['se_cfg'] is not None
        channels = min(arch['stem_channels'], int(64 * arch['width_factor'][0]))
        self.stage0 = OfficialBlock(3, channels, 2, 1, deploy, use_se)
        layer_index = 1
        for stage, (depth, factor) in enumerate(zip(arch['num_blocks'],
                                                    arch['width_factor']), start=1):
            out_channels, blocks = int(64 * 2**(stage - 1) * factor), []
            for index in range(depth):
                blocks.append(OfficialBlock(channels, out_channels, 2 if index == 0 else 1,
                                            groups_of.get(layer_index, 1), deploy, use_se))
                channels, layer_index = out_channels, layer_index + 1
            self.add_module(f'stage{stage}', nn.Sequential(*blocks))
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, inputs):
        features = self.stage0(inputs)
        for stage in range(1, 5):
            features = getattr(self, f'stage{stage}')(features)
        return self.linear(F.adaptive_avg_pool2d(features, 1).flatten(1))


def classifier_config(arch, num_classes):
    return Config(dict(default_scope='mmrepvgg',
                       model=repvgg_classifier_cfg(arch, num_classes=num_classes)))


def logits(model, images):
    with torch.no_grad():
        if hasattr(model, 'data_preprocessor'):
            return model(images, mode='tensor')
        return model(images)


IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_official_oracle_has_the_published_a0_key_layout():
    train_keys = OfficialRepVGG('A0', 1000).state_dict()
    deploy_keys = OfficialRepVGG('A0', 1000, deploy=True).state_dict()
    assert len(train_keys) == OFFICIAL_A0_TRAIN_KEYS
    assert len(deploy_keys) == OFFICIAL_A0_DEPLOY_KEYS
    for key, shape in OFFICIAL_A0_SAMPLE_SHAPES.items():
        assert tuple(train_keys[key].shape) == shape
    assert 'stage1.0.rbr_identity.weight' not in train_keys  # stride 2: no identity


@pytest.mark.parametrize('arch', ['A0', SMALL_SE_ARCH], ids=['A0', 'small_se'])
@pytest.mark.parametrize('wrapping', ['bare', 'model', 'state_dict', 'module. prefix'])
def test_official_train_checkpoint_loads_and_computes_the_official_function(
        tmp_path, arch, wrapping):
    official = randomize_batch_norms_(OfficialRepVGG(arch, 7), seed=3).eval()
    state_dict = official.state_dict()
    checkpoint = {
        'bare': state_dict,
        'model': {'model': state_dict, 'epoch': 120, 'max_accuracy': 72.4},
        'state_dict': {'state_dict': state_dict},
        'module. prefix': {f'module.{key}': value for key, value in state_dict.items()},
    }[wrapping]
    path = tmp_path / 'RepVGG-train.pth'
    torch.save(checkpoint, path)
    model = build_train_model(classifier_config(arch, 7))

    fitted = load_checkpoint(model, str(path), 'convert')
    state, dropped = fitted.source, fitted.skipped

    assert (state.layout, state.form, dropped) == ('official', 'train', [])
    assert max_relative_error(logits(official, IMAGES), logits(model, IMAGES)) < 1e-5


def test_official_deploy_checkpoint_loads_as_deploy_model(tmp_path):
    official = randomize_batch_norms_(OfficialRepVGG('A0', 7), seed=4).eval()
    official_deploy = OfficialRepVGG('A0', 7, deploy=True).eval()
    fused = build_train_model(classifier_config('A0', 7))
    load_checkpoint(fused, _saved(tmp_path, official.state_dict()), 'convert')
    reparameterize_blocks(fused)
    exported = from_project_layout(
        {key[len('backbone.'):]: value for key, value in fused.state_dict().items()
         if key.startswith('backbone.')},
        {key: value for key, value in fused.state_dict().items() if key.startswith('head.')},
        OFFICIAL_LAYOUT)
    official_deploy.load_state_dict(exported)  # the official deploy model accepts it
    model = build_train_model(classifier_config('A0', 7))

    state = load_checkpoint(model, _saved(tmp_path, exported, 'RepVGG-deploy.pth'),
                            'convert').source

    assert (state.layout, state.form) == ('official', 'deploy')
    assert max_relative_error(logits(official, IMAGES), logits(model, IMAGES)) < 1e-5
    assert max_relative_error(logits(official, IMAGES),
                              logits(official_deploy, IMAGES)) < 1e-5


def _saved(folder, checkpoint, name='checkpoint.pth'):
    path = folder / name
    torch.save(checkpoint, path)
    return str(path)


def test_converter_exports_official_deploy_layout_that_the_official_model_loads(tmp_path):
    official = randomize_batch_norms_(OfficialRepVGG('A0', 10), seed=5).eval()
    src = _saved(tmp_path, official.state_dict(), 'RepVGG-A0-train.pth')
    dst = tmp_path / 'RepVGG-A0-deploy.pth'

    report = convert_checkpoint(str(write_classifier_config(tmp_path)), src, str(dst),
                                dst_format='official')

    official_deploy = OfficialRepVGG('A0', 10, deploy=True).eval()
    official_deploy.load_state_dict(load_checkpoint_file(str(dst)))
    assert report.src_layout == 'official' and report.max_relative_error < 1e-5
    assert max_relative_error(logits(official, IMAGES),
                              logits(official_deploy, IMAGES)) < 1e-5


TIMM_ARCHS = {'repvgg_a0': 'A0', 'repvgg_b1g4': 'B1g4'}


@pytest.mark.parametrize('timm_name', ['repvgg_a0', 'repvgg_b1g4'])
@pytest.mark.parametrize('form', ['train', 'deploy'])
def test_timm_checkpoint_loads_and_computes_the_timm_function(tmp_path, timm_name, form):
    arch = TIMM_ARCHS[timm_name]
    reference = randomize_batch_norms_(
        timm.create_model(timm_name, pretrained=False, num_classes=5), seed=6).eval()
    if form == 'deploy':
        reference = reparameterize_model(reference)
    model = build_train_model(classifier_config(arch, 5))

    state = load_checkpoint(model, _saved(tmp_path, reference.state_dict()), 'convert').source

    assert (state.layout, state.form) == ('timm', form)
    assert max_relative_error(logits(reference, IMAGES), logits(model, IMAGES)) < 1e-5


def test_timm_squeeze_excitation_maps_onto_se_layer(tmp_path):
    """timm's ``attn.fc1/fc2`` (as in repvgg_d2se, here on a small net) == ``se_layer``."""
    timm_config = ByoModelCfg(
        blocks=_rep_vgg_bcfg(d=SMALL_SE_ARCH['num_blocks'],
                             wf=SMALL_SE_ARCH['width_factor']),
        stem_type='rep', stem_chs=SMALL_SE_ARCH['stem_channels'], attn_layer='se',
        attn_kwargs=dict(rd_ratio=1 / 16, rd_divisor=1))
    reference = randomize_batch_norms_(ByobNet(timm_config, num_classes=5), seed=7).eval()
    assert any('.attn.fc1.' in key for key in reference.state_dict())
    model = build_train_model(classifier_config(SMALL_SE_ARCH, 5))

    load_checkpoint(model, _saved(tmp_path, reference.state_dict()), 'convert', layout='timm')

    assert max_relative_error(logits(reference, IMAGES), logits(model, IMAGES)) < 1e-5


def test_mmpretrain_checkpoint_loads_unchanged():
    from mmpretrain.models import ImageClassifier  # noqa: F401  (registers the scope)
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    config = classifier_config('A0', 6).model
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        reference = MMPRETRAIN_MODELS.build(copy.deepcopy(config))
    assert type(reference.backbone).__module__.startswith('mmpretrain')
    randomize_batch_norms_(reference, seed=8).eval()
    state = to_project_layout(reference.state_dict())
    assert (state.layout, state.source_prefix) == ('mmrepvgg', 'backbone.')
    model = build_train_model(classifier_config('A0', 6))
    model.load_state_dict({**{f'backbone.{key}': value
                              for key, value in state.backbone.items()}, **state.rest})
    assert max_relative_error(logits(reference, IMAGES), logits(model, IMAGES)) < 1e-6


@pytest.mark.parametrize('layout', ['mmrepvgg', 'official', 'timm'])
def test_layout_detection_and_forced_format(layout):
    key_sets = {
        'mmrepvgg': RepVGG('A0').state_dict(),
        'official': OfficialRepVGG('A0', 10).state_dict(),
        'timm': timm.create_model('repvgg_a0', pretrained=False).state_dict(),
    }
    assert detect_layout(key_sets[layout]).name == layout
    for other in set(key_sets) - {layout}:
        with pytest.raises(LayoutError, match=f'holds no RepVGG block weights in the {other}'):
            to_project_layout(key_sets[layout], layout=LAYOUTS[other])


@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_official_key_names_round_trip_for_every_variant(arch):
    """Renaming is lossless: official -> project -> official gives the same keys, and the
    project keys are exactly this project's RepVGG of that arch (shapes not built)."""
    with torch.device('meta'):
        official = OfficialRepVGG(arch, 1000).state_dict()
        ours = RepVGG(arch).state_dict()
    state = to_project_layout(official)
    assert set(state.backbone) == set(ours)
    assert set(from_project_layout(state.backbone, state.rest, OFFICIAL_LAYOUT)) == \
        set(official)


def test_unknown_layout_is_a_clear_error(tmp_path):
    path = _saved(tmp_path, {'state_dict': {'layer1.0.conv1.weight': torch.ones(1)}})
    model = build_train_model(classifier_config('A0', 10))
    with pytest.raises(CheckpointError, match='holds no RepVGG block weights in the '
                       'mmrepvgg/mmpretrain, official or timm layout'):
        load_checkpoint(model, path, 'convert')

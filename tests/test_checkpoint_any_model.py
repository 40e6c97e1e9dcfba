"""Checkpoint conversion works for any model holding RepVGG blocks: a classifier, a bare
backbone, a backbone nested deeper (as in a detector), and SyncBN-trained models."""
import pytest
import torch
from checkpoint_fixtures import file_fingerprint
from mmengine.config import Config
from torch import nn

from mmrepvgg.apis import convert_checkpoint
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.models import RepVGGBlock
from mmrepvgg.registry import MODELS
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_

SMALL_ARCH = dict(num_blocks=(1, 2, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.5))


@MODELS.register_module(force=True)
class NestedDetectorLike(nn.Module):
    """A model whose RepVGG sits two levels down, as in ``detector.backbone.body``."""

    def __init__(self, backbone):
        super().__init__()
        self.detector = nn.Module()
        self.detector.backbone = MODELS.build(backbone)
        self.detector.neck = nn.Conv2d(self.detector.backbone.out_channels, 8, 1)

    def forward(self, images):
        return self.detector.neck(self.detector.backbone(images)[-1])


def model_config(kind, norm_cfg):
    backbone = dict(type='RepVGG', arch=SMALL_ARCH, norm_cfg=norm_cfg)
    model = {
        'classifier': dict(type='ImageClassifier', backbone=backbone,
                           neck=dict(type='GlobalAveragePooling'),
                           head=dict(type='LinearClsHead', num_classes=3, in_channels=256,
                                     loss=dict(type='CrossEntropyLoss'))),
        'bare backbone': backbone,
        'nested backbone': dict(type='NestedDetectorLike', backbone=backbone),
    }[kind]
    return Config(dict(default_scope='mmrepvgg', model=model))


@pytest.mark.parametrize('norm_cfg', [dict(type='BN'), dict(type='SyncBN')],
                         ids=['BN', 'SyncBN'])
@pytest.mark.parametrize('kind', ['classifier', 'bare backbone', 'nested backbone'])
def test_converted_checkpoint_of_any_repvgg_model_matches_its_train_form(
        tmp_path, kind, norm_cfg):
    assert not torch.distributed.is_initialized()  # SyncBN converts without a group
    config = model_config(kind, norm_cfg)
    train_model = randomize_batch_norms_(build_train_model(config), seed=2).eval()
    src = tmp_path / 'train.pth'
    torch.save({'state_dict': train_model.state_dict()}, src)
    before = file_fingerprint(src)

    report = convert_checkpoint(config, str(src), str(tmp_path / 'deploy.pth'))

    deploy_model = build_train_model(config)
    for module in deploy_model.modules():
        if isinstance(module, RepVGGBlock):
            module.switch_to_deploy()
    deploy_model.load_state_dict(
        torch.load(tmp_path / 'deploy.pth', weights_only=True)['state_dict'])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if kind == 'classifier':
            expected, actual = (model(images, mode='tensor')
                                for model in (train_model, deploy_model.eval()))
        else:
            expected, actual = train_model(images), deploy_model.eval()(images)
    assert report.num_fused_blocks == 6 and report.max_relative_error < 1e-5
    assert max_relative_error(expected, actual) < 1e-5
    assert file_fingerprint(src) == before


def test_classifier_checkpoint_converts_with_a_bare_backbone_config(tmp_path):
    classifier = randomize_batch_norms_(
        build_train_model(model_config('classifier', dict(type='BN'))), seed=3).eval()
    src = tmp_path / 'classifier.pth'
    torch.save({'state_dict': classifier.state_dict()}, src)

    report = convert_checkpoint(model_config('bare backbone', dict(type='BN')), str(src),
                                str(tmp_path / 'backbone_deploy.pth'))

    assert report.notices and 'head.fc.bias' in report.notices[0]
    saved = torch.load(tmp_path / 'backbone_deploy.pth', weights_only=True)['state_dict']
    assert set(saved) and all(key.startswith(('stem.', 'stage_')) for key in saved)

"""Every config builds its model and pipelines, trains one iteration, and every deploy
config loads the converted checkpoint of its train twin."""
import glob
import os
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmrepvgg
from mmrepvgg.models import ARCH_SETTINGS, RepVGG, build_model
from mmrepvgg.registry import DATASETS
from mmrepvgg.testing import randomize_batch_norms_

from conftest import REPO_ROOT

CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')
ALL_CONFIGS = sorted(
    os.path.relpath(path, CONFIG_DIR)
    for path in glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in path)
DEPLOY_CONFIGS = [name for name in ALL_CONFIGS if '/deploy/' in f'/{name}']
TRAIN_CONFIGS = [name for name in ALL_CONFIGS if name not in DEPLOY_CONFIGS]
EPOCHS_120 = ('A0', 'A1', 'A2', 'B0', 'B1', 'B1g2', 'B1g4', 'B2')
EPOCHS_200 = ('B2g4', 'B3', 'B3g4', 'D2se')
TEST_SIZE = 32  # crops the tests train and test on (the configs' 224 is too slow on CPU)


def deploy_twin(train_name: str) -> str:
    """``x/repvgg-A0_rest.py`` -> ``x/deploy/repvgg-A0_deploy_rest.py``."""
    folder, file_name = os.path.split(train_name)
    return os.path.join(folder, 'deploy', file_name.replace('_', '_deploy_', 1))


def load(name: str) -> Config:
    return Config.fromfile(os.path.join(CONFIG_DIR, name))


def arch_of(name: str) -> str:
    return re.match(r'(?:qa)?repvgg-([A-Za-z0-9]+)_', os.path.basename(name)).group(1)


def small_input_pipeline(pipeline: list) -> list:
    """The config's pipeline with its crop/resize sizes scaled down to TEST_SIZE."""
    sizes = {'RandomResizedCrop': dict(scale=TEST_SIZE),
             'ResizeEdge': dict(scale=TEST_SIZE * 8 // 7),
             'CenterCrop': dict(crop_size=TEST_SIZE),
             'Resize': dict(scale=TEST_SIZE)}
    return [{**step, **sizes.get(step['type'], {})} for step in pipeline]


def on_fake_data(cfg: Config, data_root: str, work_dir: str) -> Config:
    """``cfg`` trained for one iteration of 2 images on ``data_root``, validated on 2."""
    for loader_name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[loader_name]
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=data_root,
                              pipeline=small_input_pipeline(loader.dataset.pipeline))
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.update(checkpoint=None, logger=dict(type='LoggerHook', interval=1))
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    return cfg


def test_config_inventory_is_the_published_table_plus_digits():
    expected_train = [f'repvgg-{arch}_4xb64-coslr-120e_in1k.py' for arch in EPOCHS_120] + \
        [f'repvgg-{arch}_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py' for arch in EPOCHS_200] + \
        ['digits/repvgg-A0_digits.py']
    expected_train += [f'qarepvgg/qa{name}' for name in expected_train[:-1]] + \
        ['digits/qarepvgg-A0_digits.py']
    assert sorted(TRAIN_CONFIGS) == sorted(expected_train)
    assert sorted(DEPLOY_CONFIGS) == sorted(deploy_twin(name) for name in expected_train)
    assert sorted(EPOCHS_120 + EPOCHS_200) == sorted(ARCH_SETTINGS)


@pytest.mark.parametrize('train_name', TRAIN_CONFIGS)
def test_deploy_config_is_train_config_plus_deploy_flag(train_name):
    train_cfg, deploy_cfg = load(train_name), load(deploy_twin(train_name))
    assert deploy_cfg.model.backbone.pop('deploy') is True
    assert train_cfg.model.backbone.get('deploy', False) is False
    assert deploy_cfg.to_dict() == train_cfg.to_dict()


@pytest.mark.parametrize('train_name', TRAIN_CONFIGS)
def test_config_selects_this_projects_repvgg_of_its_variant(train_name):
    cfg = load(train_name)
    assert cfg.default_scope == 'mmrepvgg'
    assert cfg.custom_imports.imports == ['mmrepvgg']
    assert cfg.model.backbone.type == 'RepVGG'
    assert cfg.model.backbone.arch == arch_of(train_name)


@pytest.mark.parametrize('arch', EPOCHS_120 + EPOCHS_200)
def test_imagenet_config_follows_the_published_recipe(arch):
    long_recipe = arch in EPOCHS_200
    cfg = load(next(name for name in TRAIN_CONFIGS if arch_of(name) == arch
                    and not name.startswith('digits')))
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1, momentum=0.9,
                                               weight_decay=1e-4)
    assert cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.train_dataloader.batch_size == 64
    assert cfg.train_dataloader.dataset.data_root == 'data/imagenet'
    train_steps = [step.type for step in cfg.train_dataloader.dataset.pipeline]
    assert train_steps == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip'] + \
        (['AutoAugment'] if long_recipe else []) + ['PackInputs']
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert (crop.scale, crop.backend) == (224, 'pillow')
    resize, center_crop = cfg.test_dataloader.dataset.pipeline[1:3]
    assert (resize.type, resize.scale, resize.edge) == ('ResizeEdge', 256, 'short')
    assert (center_crop.type, center_crop.crop_size) == ('CenterCrop', 224)
    if long_recipe:
        assert cfg.train_cfg.max_epochs == 200
        warmup, cosine = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end) == \
            ('LinearLR', 0.25, 0, 5)
        assert (cosine.type, cosine.T_max, cosine.begin, cosine.end, cosine.by_epoch) == \
            ('CosineAnnealingLR', 195, 5, 200, True)
        assert cfg.model.head.loss.type == 'LabelSmoothLoss'
        assert cfg.model.head.loss.label_smooth_val == 0.1
        assert cfg.model.train_cfg.augments == dict(type='Mixup', alpha=0.2)
        assert cfg.train_dataloader.dataset.pipeline[3].policies == 'imagenet'
    else:
        assert cfg.train_cfg.max_epochs == 120
        assert (cfg.param_scheduler.type, cfg.param_scheduler.T_max,
                cfg.param_scheduler.by_epoch) == ('CosineAnnealingLR', 120, True)
        assert cfg.model.head.loss.type == 'CrossEntropyLoss'
        assert 'train_cfg' not in cfg.model


def test_paper_no_decay_option_exempts_bn_and_biases_only():
    cfg = load('repvgg-A0_4xb64-coslr-120e_in1k.py')
    cfg.optim_wrapper.paramwise_cfg.update(norm_decay_mult=0.0, bias_decay_mult=0.0)
    model = build_model(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay_of = {id(param): group['weight_decay'] for group in optimizer.param_groups
                for param in group['params']}
    for name, param in model.named_parameters():
        exempt = 'norm' in name or name.endswith('bias')
        assert decay_of.get(id(param)) == (0.0 if exempt else 1e-4), name


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds_model_and_pipelines(name, fake_imagenet_root):
    cfg = load(name)
    model = build_model(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, RepVGG)
    assert backbone.deploy == ('/deploy/' in f'/{name}')
    assert cfg.model.head.in_channels == backbone.out_channels
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        for loader_name in ('train_dataloader', 'test_dataloader'):
            dataset_cfg = cfg[loader_name].dataset
            dataset = DATASETS.build({**dataset_cfg, 'data_root': fake_imagenet_root})
            sample = dataset[0]
            crop = TEST_SIZE if name.startswith('digits') else 224
            assert sample['inputs'].shape == (3, crop, crop)


@pytest.mark.parametrize('name', TRAIN_CONFIGS)
def test_train_config_runs_one_training_iteration(name, fake_imagenet_root, tmp_path):
    cfg = on_fake_data(load(name), fake_imagenet_root, str(tmp_path))
    runner = Runner.from_cfg(cfg)
    before = {key: value.clone() for key, value in runner.model.state_dict().items()}
    runner.train()
    metrics = runner.val_loop.run()
    assert runner.iter == 1
    changed = [key for key, value in runner.model.state_dict().items()
               if not torch.equal(before[key], value)]
    assert any(key.endswith('branch_3x3.conv.weight') for key in changed)
    assert 'accuracy/top1' in metrics


@pytest.mark.parametrize('train_name', TRAIN_CONFIGS)
def test_deploy_config_loads_converted_train_checkpoint(train_name):
    train_model = randomize_batch_norms_(build_model(load(train_name).model))
    deploy_state = mmrepvgg.repvgg_convert(train_model).state_dict()
    deploy_model = build_model(load(deploy_twin(train_name)).model)
    incompatible = deploy_model.load_state_dict(deploy_state, strict=False)
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    images = torch.randn(2, 3, TEST_SIZE, TEST_SIZE)
    with torch.no_grad():
        expected = train_model(images, mode='tensor')
        actual = deploy_model(images, mode='tensor')
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())

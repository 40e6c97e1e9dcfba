"""Every config builds its model and pipelines, every recipe trains one iteration, and
every deploy config takes the converted checkpoint of its train twin.

Models of every config are built on the meta device (shapes without weights: building the
full-size variants for real is what made this file slow); what needs weights runs once per
distinct recipe, on the smallest variant that has it."""
import glob
import os
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from PIL import Image
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmrepvgg
from mmrepvgg.model_zoo import find_model
from mmrepvgg.models import ARCH_SETTINGS, RepVGG, build_model, repvgg_classifier_cfg
from mmrepvgg.models.repvgg import DEFAULT_INIT_CFG
from mmrepvgg.registry import DATASETS
from lab.synthetic import randomize_batch_norms_

from conftest import REPO_ROOT

CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')
EPOCHS_120 = ('A0', 'A1', 'A2', 'B0', 'B1', 'B1g2', 'B1g4', 'B2')
EPOCHS_200 = ('B2g4', 'B3', 'B3g4', 'D2se')
TEST_SIZE = 32  # crops the tests train and test on (the configs' 224 is too slow on CPU)
A0_ZOO_NAME = 'repvgg-A0_3rdparty_4xb64-coslr-120e_in1k'


def deploy_twin(train_name: str) -> str:
    """``x/repvgg-A0_rest.py`` -> ``x/deploy/repvgg-A0_deploy_rest.py``."""
    folder, file_name = os.path.split(train_name)
    return os.path.join(folder, 'deploy', file_name.replace('_', '_deploy_', 1))


# The project's configs, by specification (not by listing configs/, where a user keeps
# configs of their own, e.g. configs/my_project/ as docs/finetune.md suggests).
IMAGENET_CONFIGS = [f'repvgg-{arch}_4xb64-coslr-120e_in1k.py' for arch in EPOCHS_120] + \
    [f'repvgg-{arch}_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py' for arch in EPOCHS_200]
TRAIN_CONFIGS = IMAGENET_CONFIGS + \
    ['finetune/repvgg-A0_1xb32-ft-30e_custom.py', 'digits/repvgg-A0_digits.py'] + \
    [f'qarepvgg/qa{name}' for name in IMAGENET_CONFIGS] + ['digits/qarepvgg-A0_digits.py']
DEPLOY_CONFIGS = [deploy_twin(name) for name in TRAIN_CONFIGS]
ALL_CONFIGS = TRAIN_CONFIGS + DEPLOY_CONFIGS
# The project's config folders: each holds exactly the configs above.
PROJECT_FOLDERS = ('', 'deploy', 'finetune', 'finetune/deploy', 'digits', 'digits/deploy',
                   'qarepvgg', 'qarepvgg/deploy')
# One config per distinct training recipe (the smallest variant of each): the others
# differ from one of these only in the architecture (see
# test_every_train_config_is_a_trained_recipe_with_another_arch).
RECIPE_CONFIGS = ['repvgg-A0_4xb64-coslr-120e_in1k.py',
                  'repvgg-B2g4_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py',
                  'qarepvgg/qarepvgg-A0_4xb64-coslr-120e_in1k.py',
                  'qarepvgg/qarepvgg-B2g4_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py',
                  'finetune/repvgg-A0_1xb32-ft-30e_custom.py', 'digits/repvgg-A0_digits.py',
                  'digits/qarepvgg-A0_digits.py']


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
    # No network in tests: test_finetuning_template_* loads the pretrained backbone.
    cfg.model.backbone.init_cfg = None
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'
    return cfg


def test_config_inventory_is_the_published_table_plus_finetuning_and_digits():
    present = sorted(os.path.relpath(path, CONFIG_DIR) for folder in PROJECT_FOLDERS
                     for path in glob.glob(os.path.join(CONFIG_DIR, folder, '*.py')))
    assert present == sorted(ALL_CONFIGS)
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
    # Scoped, so that mmpretrain's get_model (default scope 'mmpretrain') builds ours too.
    assert cfg.model.backbone.type == 'mmrepvgg.RepVGG'
    assert cfg.model.backbone.arch == arch_of(train_name)


# Every shipped config, of this project, mmseg and mmdet.
SHIPPED_CONFIGS = sorted(
    os.path.relpath(path, CONFIG_DIR)
    for path in glob.glob(os.path.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '/_base_/' not in path)
RUNNER_LOOKUP = """
import sys
import mmrepvgg, mmrepvgg.dense.mmcv_lite  # the configs' custom_imports
assert 'mmrepvgg.engine' not in sys.modules
from mmengine.registry import RUNNERS
from mmdet.registry import RUNNERS as MMDET_RUNNERS
from mmseg.registry import RUNNERS as MMSEG_RUNNERS
found = [registry.get('mmrepvgg.RepVGGRunner') for registry in
         (RUNNERS, MMSEG_RUNNERS, MMDET_RUNNERS)]
from mmrepvgg.engine import RepVGGRunner
print(all(runner is RepVGGRunner for runner in found))
"""


@pytest.mark.parametrize('name', SHIPPED_CONFIGS)
def test_every_shipped_config_selects_the_projects_runner(name):
    """mmpretrain's, mmseg's and mmdet's own tools build ``runner_type`` (see
    docs/trust_in_other_tools.md); mmseg's test.py ignores it, its configs add the guard."""
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, name), import_custom_modules=False)
    assert cfg.runner_type == 'mmrepvgg.RepVGGRunner'
    assert cfg.custom_imports.imports[0] == 'mmrepvgg'
    if name.startswith('mmseg/'):
        assert dict(type='mmrepvgg.RepVGGCheckpointGuard') in cfg.custom_hooks


def test_the_runner_type_resolves_from_every_projects_registry_after_the_import():
    result = subprocess.run([sys.executable, '-c', RUNNER_LOOKUP], capture_output=True,
                            text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == 'True'


def recipe_config(train_name: str) -> str:
    """The config of RECIPE_CONFIGS whose recipe ``train_name`` shares: the same path but
    for the variant."""
    def without_variant(name):
        return name.replace(f'-{arch_of(name)}_', '-_', 1)
    return next(name for name in RECIPE_CONFIGS
                if without_variant(name) == without_variant(train_name))


def without_arch(cfg: Config) -> dict:
    """The config as a dict, less what follows from the architecture."""
    settings = cfg.to_dict()
    del settings['model']['backbone']['arch'], settings['model']['head']['in_channels']
    return settings


@pytest.mark.parametrize('train_name', TRAIN_CONFIGS)
def test_every_train_config_is_a_trained_recipe_with_another_arch(train_name):
    assert without_arch(load(train_name)) == without_arch(load(recipe_config(train_name)))


def build_on_meta(cfg_model: dict) -> torch.nn.Module:
    """The model of a config, its tensors on the meta device: every shape, no weights."""
    with torch.device('meta'):
        return build_model(cfg_model)


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_mmpretrain_get_model_builds_this_projects_repvgg(name):
    from mmpretrain.apis import get_model as mmpretrain_get_model
    with torch.device('meta'):
        backbone = mmpretrain_get_model(os.path.join(CONFIG_DIR, name)).backbone
    assert isinstance(backbone, RepVGG)
    assert backbone.deploy == ('/deploy/' in f'/{name}')


def test_finetuning_template_starts_from_the_published_a0_backbone():
    cfg = load('finetune/repvgg-A0_1xb32-ft-30e_custom.py')
    # The project's reader and exact backbone fit (mmengine's 'Pretrained' is non-strict).
    assert cfg.model.backbone.init_cfg == dict(
        type='mmrepvgg.Pretrained', checkpoint=find_model(A0_ZOO_NAME).weights)
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert (loader.dataset.type, loader.dataset.get('ann_file', '')) == \
            ('CustomDataset', '')
    assert cfg.train_dataloader.drop_last is True


def test_finetuning_template_loads_the_published_backbone_and_trains_a_new_head(
        fake_data_roots, tmp_path):
    cfg = load('finetune/repvgg-A0_1xb32-ft-30e_custom.py')
    published = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0')))
    weights_path = tmp_path / os.path.basename(cfg.model.backbone.init_cfg.checkpoint)
    torch.save({'state_dict': published.state_dict()}, weights_path)
    init_cfg = cfg.model.backbone.init_cfg
    cfg = on_fake_data(cfg, fake_data_roots['CustomDataset'], str(tmp_path / 'work'))
    cfg.model.backbone.init_cfg = {**init_cfg, 'checkpoint': str(weights_path)}
    cfg.optim_wrapper.optimizer.lr = 0.0  # keep the loaded weights to compare them
    runner = Runner.from_cfg(cfg)
    runner.train()
    # Parameters only: training updates the BN running statistics.
    trained = dict(runner.model.backbone.named_parameters())
    for key, value in published.backbone.named_parameters():
        torch.testing.assert_close(trained[key], value)
    assert runner.model.head.fc.out_features == 2 != published.head.fc.out_features


def test_digits_config_is_the_finetuning_template_from_scratch_on_digits():
    template = load('finetune/repvgg-A0_1xb32-ft-30e_custom.py')
    digits = load('digits/repvgg-A0_digits.py')
    # From scratch, initialised as a RepVGG built without init_cfg.
    assert digits.model.backbone.init_cfg == DEFAULT_INIT_CFG
    assert digits.model.head.num_classes == digits.data_preprocessor.num_classes == 10
    for loader_name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        template_data, digits_data = template[loader_name], digits[loader_name]
        assert digits_data.dataset.type == template_data.dataset.type
        assert digits_data.dataset.data_prefix == template_data.dataset.data_prefix
        assert digits_data.dataset.data_root == 'data/digits'
    assert digits.train_dataloader.drop_last is True


def test_digits_training_survives_a_last_batch_of_one_image(digits_workspace, tmp_path):
    cfg = on_fake_data(load('digits/repvgg-A0_digits.py'),
                       str(digits_workspace / 'data' / 'digits'), str(tmp_path))
    # 3 images in batches of 2: the last batch would hold one image.
    cfg.train_dataloader.dataset.indices = 3
    cfg.val_dataloader.dataset.indices = cfg.test_dataloader.dataset.indices = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1


@pytest.mark.parametrize('arch', EPOCHS_120 + EPOCHS_200)
def test_imagenet_config_follows_the_published_recipe(arch):
    long_recipe = arch in EPOCHS_200
    cfg = load(next(name for name in TRAIN_CONFIGS if arch_of(name) == arch
                    and '/' not in name))
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


@pytest.fixture(scope='module')
def fake_data_roots(fake_imagenet_root, tmp_path_factory):
    """Fake data per dataset type: ImageNet's folders + annotations, and CustomDataset's
    one folder per class (2 classes, one 40x48 image each) for train and val."""
    custom_root = tmp_path_factory.mktemp('fake_custom')
    for split in ('train', 'val'):
        for label in (0, 1):
            (custom_root / split / f'class_{label}').mkdir(parents=True)
            Image.new('RGB', (48, 40), (label * 200, 50, 100)).save(
                custom_root / split / f'class_{label}' / 'image.png')
    return dict(ImageNet=fake_imagenet_root, CustomDataset=str(custom_root))


def fake_data_root(cfg: Config, fake_data_roots: dict) -> str:
    return fake_data_roots[cfg.train_dataloader.dataset.type]


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds_model_and_pipelines(name, fake_data_roots):
    cfg = load(name)
    model = build_on_meta(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, RepVGG)
    assert backbone.deploy == ('/deploy/' in f'/{name}')
    assert cfg.model.head.in_channels == backbone.out_channels
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        for loader_name in ('train_dataloader', 'test_dataloader'):
            dataset_cfg = cfg[loader_name].dataset
            dataset = DATASETS.build({**dataset_cfg,
                                      'data_root': fake_data_root(cfg, fake_data_roots)})
            sample = dataset[0]
            crop = TEST_SIZE if name.startswith('digits') else 224
            assert sample['inputs'].shape == (3, crop, crop)


@pytest.mark.parametrize('name', RECIPE_CONFIGS)
def test_each_recipe_runs_one_training_iteration(name, fake_data_roots, tmp_path):
    cfg = load(name)
    cfg = on_fake_data(cfg, fake_data_root(cfg, fake_data_roots), str(tmp_path))
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
def test_deploy_config_has_the_tensors_of_its_converted_train_twin(train_name):
    deploy_state = mmrepvgg.repvgg_convert(build_on_meta(load(train_name).model)).state_dict()
    expected_state = build_on_meta(load(deploy_twin(train_name)).model).state_dict()
    assert {key: (value.shape, value.dtype) for key, value in deploy_state.items()} == \
        {key: (value.shape, value.dtype) for key, value in expected_state.items()}


@pytest.mark.parametrize('train_name', RECIPE_CONFIGS)
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


def test_finetune_doc_example_config_sets_classes_and_data_everywhere(tmp_path):
    with open(os.path.join(REPO_ROOT, 'docs', 'finetune.md')) as stream:
        example = re.search(r'```python\n(# configs/my_project/(\S+)\n.*?)```', stream.read(),
                            re.S)
    # The project's own config folders beside a new configs/my_project/ (not every entry
    # of configs/: a user's own my_project/ there would collide).
    config_dir = tmp_path / 'configs'
    (config_dir / 'my_project').mkdir(parents=True)
    for folder in ('_base_', 'finetune'):
        (config_dir / folder).symlink_to(os.path.join(CONFIG_DIR, folder))
    (config_dir / 'my_project' / example.group(2)).write_text(example.group(1))
    cfg = Config.fromfile(str(config_dir / 'my_project' / example.group(2)))
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == 2
    for loader_name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader_name].dataset.data_root == 'data/pets'
    assert cfg.model.backbone.init_cfg.type == 'mmrepvgg.Pretrained'

"""The model zoo (configs/metafile.yml): names, configs and URLs; mmpretrain's entry points
(list_models, get_model, ImageClassificationInferencer) build this project's RepVGG; our
get_model by name with local weights. No network: URLs are mapped to local files."""
import os
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmrepvgg.apis import ConfigError, get_model, inference_model
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.engine import load_repvgg_config
from mmrepvgg.model_zoo import _zoo_models, checkpoint_source, find_model
from mmrepvgg.models import ARCH_SETTINGS, RepVGG, build_model, repvgg_classifier_cfg
from mmrepvgg.models.arch import resolve_arch
from lab.synthetic import randomize_batch_norms_

from conftest import REPO_ROOT

A0_TRAIN = 'repvgg-A0_3rdparty_4xb64-coslr-120e_in1k'
A0_DEPLOY = 'repvgg-A0_deploy_3rdparty_4xb64-coslr-120e_in1k'


@pytest.fixture(scope='module')
def a0_checkpoint(tmp_path_factory):
    """A 1000-class A0 classifier with trained-looking BNs, saved under the file name of the
    published A0 URL; returns (model, folder)."""
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0')))
    folder = tmp_path_factory.mktemp('zoo_weights')
    torch.save({'state_dict': model.state_dict()},
               folder / os.path.basename(find_model(A0_TRAIN).weights))
    return model, folder


def test_zoo_has_a_train_and_a_deploy_name_for_every_published_variant():
    models = _zoo_models().values()
    assert sorted((model.arch, model.deploy) for model in models) == \
        sorted((arch, deploy) for arch in ARCH_SETTINGS for deploy in (False, True))


@pytest.mark.parametrize('model', _zoo_models().values(), ids=lambda model: model.name)
def test_zoo_entry_names_its_config_and_the_published_checkpoint(model):
    config = Config.fromfile(model.config)
    assert config.model.backbone.arch == model.arch
    assert config.model.backbone.get('deploy', False) == model.deploy
    train_name = model.name.replace('_deploy', '')
    # Published files are named <train name>_<date>-<hash>.pth.
    assert re.fullmatch(rf'https://download\.openmmlab\.com/mmclassification/v0/repvgg/'
                        rf'{re.escape(train_name)}_\d{{8}}-[0-9a-f]{{8}}\.pth', model.weights)
    assert os.path.basename(model.config).replace('_deploy', '') == \
        train_name.replace('_3rdparty', '') + '.py'


def test_checkpoint_source_maps_zoo_names_to_urls_and_keeps_paths_and_urls():
    url = find_model(A0_TRAIN).weights
    assert checkpoint_source(A0_TRAIN) == url
    assert checkpoint_source(A0_DEPLOY.upper()) == url
    assert checkpoint_source('work_dirs/epoch_6.pth') == 'work_dirs/epoch_6.pth'
    assert checkpoint_source('https://example.org/x.pth') == 'https://example.org/x.pth'


def test_list_models_gives_the_zoo_names_as_mmpretrain_lists_them():
    import mmpretrain
    import mmrepvgg
    ours = set(_zoo_models())
    assert mmrepvgg.list_models() == sorted(ours)
    for pattern in ('repvgg-a0', 'repvgg-b1g2*deploy', '*_deploy_'):
        expected = [name for name in mmpretrain.list_models(pattern) if name in ours]
        assert mmrepvgg.list_models(pattern) == expected, pattern
    assert mmrepvgg.list_models('repvgg-A0') == [A0_TRAIN.lower(), A0_DEPLOY.lower()]
    assert mmrepvgg.list_models('resnet') == []


def test_mmpretrain_list_models_lists_the_zoo():
    from mmpretrain import list_models
    listed = set(list_models('repvgg*'))
    assert {name for name in _zoo_models()} <= listed


@pytest.mark.parametrize('name', [A0_TRAIN, A0_DEPLOY])
def test_mmpretrain_get_model_by_name_builds_this_projects_repvgg(name):
    from mmpretrain import get_model as mmpretrain_get_model
    model = mmpretrain_get_model(name)
    assert isinstance(model.backbone, RepVGG)
    assert model.backbone.deploy == ('deploy' in name)


def test_mmpretrain_get_model_of_d2se_config_keeps_se_in_deploy_form():
    from mmpretrain import get_model as mmpretrain_get_model
    config = os.path.join(REPO_ROOT, 'configs', 'deploy',
                          'repvgg-D2se_deploy_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py')
    with torch.device('meta'):  # the modules only
        backbone = mmpretrain_get_model(config).backbone
    assert isinstance(backbone, RepVGG) and backbone.deploy
    se_layers = [name for name, module in backbone.named_modules()
                 if type(module).__name__ == 'SELayer']
    assert len(se_layers) == sum(ARCH_SETTINGS['D2se']['num_blocks']) + 1  # + the stem


def test_mmpretrain_get_model_pretrained_true_finds_the_published_url(a0_checkpoint):
    from mmpretrain import get_model as mmpretrain_get_model
    source, folder = a0_checkpoint
    model = mmpretrain_get_model(A0_TRAIN, pretrained=True,
                                 url_mapping=('https://.*/', f'{folder}/'))
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images, mode='tensor'), source(images, mode='tensor'))


def test_mmpretrain_inferencer_builds_this_projects_repvgg(tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(A0_TRAIN, pretrained=False)
    assert isinstance(inferencer.model.backbone, RepVGG)
    image = tmp_path / 'image.png'
    Image.fromarray(np.full((40, 40, 3), 128, dtype=np.uint8)).save(image)
    result = inferencer(str(image))[0]
    assert result['pred_scores'].shape == (1000, )


@pytest.mark.parametrize('name', [A0_TRAIN, A0_DEPLOY])
def test_get_model_by_name_loads_local_train_weights_in_the_named_form(name, a0_checkpoint):
    source, folder = a0_checkpoint
    path = str(folder / os.path.basename(find_model(A0_TRAIN).weights))
    model = get_model(name, pretrained=path)
    assert model.backbone.deploy == ('deploy' in name)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(images, mode='tensor')
        torch.testing.assert_close(model(images, mode='tensor'), expected,
                                   rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_get_model_pretrained_true_needs_a_zoo_name():
    config = os.path.join(REPO_ROOT, 'configs', 'repvgg-A0_4xb64-coslr-120e_in1k.py')
    with pytest.raises(ValueError, match='needs a model zoo name'):
        get_model(config, pretrained=True)


def test_get_model_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="list_models"):
        get_model('repvgg-Z9_nothing')


def test_inference_model_fuses_a_copy_and_leaves_the_train_model_alone(tmp_path, a0_checkpoint):
    source, _ = a0_checkpoint
    source._config = Config.fromfile(find_model(A0_TRAIN).config)
    source._dataset_meta = {}
    image = tmp_path / 'image.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (36, 36, 3),
                                                      dtype=np.uint8)).save(image)
    result = inference_model(source, str(image))
    assert not source.backbone.deploy
    assert result['pred_label'] == int(np.argmax(result['pred_scores']))


@pytest.mark.parametrize('config', ['configs/repvgg-A0_4xb64-coslr-120e_in1k.py', A0_TRAIN,
                                    A0_TRAIN.upper()])
def test_apis_and_tools_take_a_zoo_name_or_a_packaged_config_path_from_any_folder(
        config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert load_repvgg_config(config).model.backbone.arch == 'A0'
    assert get_model(config).backbone.arch == resolve_arch('A0')
    assert build_train_model(config).backbone.stem.in_channels == 3


def test_a_config_that_is_neither_a_file_nor_a_name_is_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match='configs/nope.py: no such config file or model zoo '
                       'name'):
        load_repvgg_config('configs/nope.py')

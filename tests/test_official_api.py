"""The official repository's Python API (mmrepvgg.official) runs its snippets as written."""
import pytest
import torch

import mmrepvgg
from mmrepvgg import official
from mmrepvgg.checkpoint import LAYOUTS, from_project_layout
from mmrepvgg.models import ARCH_SETTINGS, RepVGGBlock
from mmrepvgg.official import (create_RepVGG_A0, create_RepVGG_B1g2, func_dict,
                               get_RepVGG_func_by_name, repvgg_convert,
                               repvgg_model_convert)
from mmrepvgg.published import PUBLISHED
from mmrepvgg.numerics import max_relative_error
from mmrepvgg.synthetic import randomize_batch_norms_

SMALL_IMAGES = (2, 3, 32, 32)


def millions_of_parameters(model):
    return sum(param.numel() for param in model.parameters()) / 1e6


def test_one_factory_per_published_variant_by_attribute_and_by_name():
    for arch in ARCH_SETTINGS:
        factory = getattr(official, f'create_RepVGG_{arch}')
        assert factory.__name__ == f'create_RepVGG_{arch}'
        assert func_dict[f'RepVGG-{arch}'] is factory
        assert get_RepVGG_func_by_name(f'RepVGG-{arch}') is factory
    assert len(func_dict) == len(ARCH_SETTINGS)
    with pytest.raises(KeyError, match='RepVGG-A9'):
        get_RepVGG_func_by_name('RepVGG-A9')


@pytest.mark.parametrize('deploy', [False, True], ids=['train', 'deploy'])
def test_factory_builds_the_published_1000_class_classifier(deploy):
    model = create_RepVGG_A0(deploy=deploy)
    assert model.training is not deploy
    assert model.backbone.deploy is deploy
    published = PUBLISHED['A0']
    assert millions_of_parameters(model) == pytest.approx(
        published.params_deploy if deploy else published.params_train, abs=0.005 + 1e-9)
    with torch.no_grad():
        assert model.eval()(torch.randn(SMALL_IMAGES)).shape == (2, 1000)


def test_use_checkpoint_turns_on_activation_checkpointing_in_every_block():
    blocks = [module for module in create_RepVGG_B1g2(use_checkpoint=True).modules()
              if isinstance(module, RepVGGBlock)]
    assert len(blocks) == 28 and all(block.with_cp for block in blocks)


def official_train_checkpoint(path):
    """A trained-looking RepVGG-A0 saved as the official repository saves it: a bare state
    dict with its key names. Returns the model, in eval mode."""
    torch.manual_seed(0)
    model = randomize_batch_norms_(create_RepVGG_A0()).eval()
    state_dict = model.state_dict()
    backbone = {key[len('backbone.'):]: tensor for key, tensor in state_dict.items()
                if key.startswith('backbone.')}
    head = {key: tensor for key, tensor in state_dict.items()
            if not key.startswith('backbone.')}
    official_state_dict = from_project_layout(backbone, head, LAYOUTS['official'])
    assert {'stage0.rbr_dense.conv.weight', 'stage1.1.rbr_identity.running_var',
            'stage4.0.rbr_1x1.bn.bias', 'linear.weight'} <= set(official_state_dict)
    torch.save(official_state_dict, path)
    return model


def test_the_official_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference = official_train_checkpoint('RepVGG-A0-train.pth')

    train_model = create_RepVGG_A0(deploy=False)
    train_model.load_state_dict(torch.load('RepVGG-A0-train.pth'))
    deploy_model = repvgg_model_convert(train_model, save_path='RepVGG-A0-deploy.pth')

    reloaded = create_RepVGG_A0(deploy=True)
    reloaded.load_state_dict(torch.load('RepVGG-A0-deploy.pth'))
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        expected = reference(images)
        assert max_relative_error(expected, deploy_model.eval()(images)) <= 1e-5
        assert max_relative_error(expected, reloaded.eval()(images)) <= 1e-5
    assert not train_model.backbone.deploy  # do_copy=True left it alone


def test_repvgg_model_convert_without_copy_fuses_the_model_itself():
    model = create_RepVGG_A0()
    assert repvgg_model_convert(model, do_copy=False) is model
    assert model.backbone.deploy and not hasattr(model.backbone.stem, 'branch_3x3')


def test_the_official_three_argument_repvgg_convert(tmp_path):
    reference = official_train_checkpoint(tmp_path / 'train.pth')
    deploy_path = tmp_path / 'deploy.pth'
    deploy_model = repvgg_convert(reference, create_RepVGG_A0, save_path=str(deploy_path))
    assert deploy_model.backbone.deploy and not reference.backbone.deploy
    saved = torch.load(deploy_path)
    assert saved.keys() == deploy_model.state_dict().keys()
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        assert max_relative_error(reference(images), deploy_model(images)) <= 1e-5


def test_mmrepvgg_repvgg_convert_takes_a_builder_as_its_second_argument():
    model = create_RepVGG_A0().eval()
    deploy_model = mmrepvgg.repvgg_convert(model, create_RepVGG_A0)
    assert deploy_model.backbone.deploy and not deploy_model.training
    with pytest.raises(ValueError, match='create_RepVGG_B1g2.*builds another model'):
        mmrepvgg.repvgg_convert(model, create_RepVGG_B1g2)

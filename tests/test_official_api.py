"""The official repository's Python API (mmrepvgg.official) runs its snippets as written.

The oracle is the official code itself, as packaged on the index (``repvgg-pytorch``: the
official repvgg.py and se_block.py): its names, its models' sizes and outputs, and the
checkpoints it writes.
"""
import pytest
import repvgg_pytorch.repvgg as official_code
import torch

import mmrepvgg
from mmrepvgg import official
from mmrepvgg.models import RepVGGBlock
from mmrepvgg.official import (create_RepVGG_A0, create_RepVGG_B1g2, func_dict,
                               get_RepVGG_func_by_name, repvgg_convert,
                               repvgg_model_convert)
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_

SMALL_IMAGES = (2, 3, 32, 32)
# The official func_dict also names backbone-only builders, which are no RepVGG classifier.
OFFICIAL_NAMES = [name for name in official_code.func_dict if not name.endswith('-backbone')]


def parameter_count(model):
    return sum(param.numel() for param in model.parameters())


def test_func_dict_names_every_official_variant_in_the_official_order():
    assert list(func_dict) == OFFICIAL_NAMES
    for name in OFFICIAL_NAMES:
        factory = getattr(official, f'create_RepVGG_{name[len("RepVGG-"):]}')
        assert factory.__name__ == official_code.func_dict[name].__name__
        assert func_dict[name] is factory is get_RepVGG_func_by_name(name)
    with pytest.raises(KeyError, match='RepVGG-A9'):
        get_RepVGG_func_by_name('RepVGG-A9')


@pytest.mark.parametrize('name', OFFICIAL_NAMES)
@pytest.mark.parametrize('deploy', [False, True], ids=['train', 'deploy'])
def test_factory_builds_as_many_parameters_as_the_official_one(name, deploy):
    # On the meta device: the sizes without the memory or the time of B3's 123 M weights.
    with torch.device('meta'):
        ours = func_dict[name](deploy=deploy)
        theirs = official_code.func_dict[name](deploy=deploy)
    assert parameter_count(ours) == parameter_count(theirs)
    assert ours.training is not deploy
    assert ours.backbone.deploy is deploy


def test_use_checkpoint_turns_on_activation_checkpointing_in_every_block():
    blocks = [module for module in create_RepVGG_B1g2(use_checkpoint=True).modules()
              if isinstance(module, RepVGGBlock)]
    assert len(blocks) == 28 and all(block.with_cp for block in blocks)


def official_train_checkpoint(path):
    """A trained-looking official RepVGG-A0 (the official code's own model), saved as its
    repository saves it: a bare state dict with its key names. Returns the model, in eval
    mode."""
    torch.manual_seed(0)
    model = randomize_batch_norms_(official_code.create_RepVGG_A0()).eval()
    torch.save(model.state_dict(), path)
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
    train_model = create_RepVGG_A0()
    train_model.load_state_dict(torch.load(tmp_path / 'train.pth'))
    deploy_path = tmp_path / 'deploy.pth'
    deploy_model = repvgg_convert(train_model.eval(), create_RepVGG_A0,
                                  save_path=str(deploy_path))
    assert deploy_model.backbone.deploy and not train_model.backbone.deploy
    saved = torch.load(deploy_path)
    assert saved.keys() == deploy_model.state_dict().keys()
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        assert max_relative_error(reference(images), deploy_model(images)) <= 1e-5


def test_a_deploy_checkpoint_of_the_official_converter_loads_and_computes_the_same(
        tmp_path):
    reference = official_train_checkpoint(tmp_path / 'train.pth')
    official_deploy = official_code.repvgg_model_convert(
        reference, save_path=str(tmp_path / 'deploy.pth')).eval()
    ours = create_RepVGG_A0(deploy=True)
    ours.load_state_dict(torch.load(tmp_path / 'deploy.pth'))
    images = torch.randn(SMALL_IMAGES)
    with torch.no_grad():
        assert max_relative_error(official_deploy(images), ours(images)) <= 1e-5


def test_mmrepvgg_repvgg_convert_takes_a_builder_as_its_second_argument():
    model = create_RepVGG_A0().eval()
    deploy_model = mmrepvgg.repvgg_convert(model, create_RepVGG_A0)
    assert deploy_model.backbone.deploy and not deploy_model.training
    with pytest.raises(ValueError, match='create_RepVGG_B1g2.*builds another model'):
        mmrepvgg.repvgg_convert(model, create_RepVGG_B1g2)

"""tools/reparameterize_repvgg.py: converts, verifies, writes atomically, never loses a file."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from checkpoint_fixtures import (REPO_ROOT, file_fingerprint, save_train_checkpoint,
                                 trained_classifier, write_classifier_config)
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

from mmrepvgg.apis import convert_checkpoint
from mmrepvgg.checkpoint import CheckpointError
from mmrepvgg.models import RepVGGBlock
from mmrepvgg.registry import MODELS
from mmrepvgg._numerics import max_relative_error

from conftest import load_tool

TOOL = REPO_ROOT / 'tools' / 'reparameterize_repvgg.py'


@pytest.fixture(scope='module')
def tool():
    return load_tool('tools/reparameterize_repvgg.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(config, train checkpoint, train model) of a 10-class RepVGG-A0 classifier."""
    folder = tmp_path_factory.mktemp('trained')
    config = write_classifier_config(folder)
    model = trained_classifier(config)
    return config, save_train_checkpoint(model, folder / 'train.pth'), model


def build_deploy_model_like_test_py(config_path, checkpoint_path):
    """What tools/test.py does with DEPLOY_CONFIG and DST: build, then Runner-style load
    (mmengine's load_checkpoint -> torch.load, weights_only=True by default)."""
    config = Config.fromfile(str(config_path))
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        model = MODELS.build(config.model)
    load_checkpoint(model, str(checkpoint_path), map_location='cpu', strict=True)
    return model.eval()


def test_deploy_checkpoint_loads_into_deploy_config_and_matches_train_model(
        tool, trained, tmp_path, capsys):
    config, src, train_model = trained
    dst = tmp_path / 'deploy.pth'

    assert tool.main([str(config), str(src), str(dst)]) == 0

    printed = capsys.readouterr().out
    assert 'max relative error train vs deploy' in printed and str(dst) in printed
    deploy_config = write_classifier_config(tmp_path, deploy=True)
    deploy_model = build_deploy_model_like_test_py(deploy_config, dst)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        error = max_relative_error(train_model(images, mode='tensor'),
                                   deploy_model(images, mode='tensor'))
    assert error < 1e-5
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['reparameterized']['src_form'] == 'train'
    assert meta['epoch'] == 1  # the source's meta is kept beside the conversion record


def test_conversion_keeps_the_class_names_of_the_source_meta(tool, trained, tmp_path):
    config, _, model = trained
    classes = tuple(str(digit) for digit in range(10))
    src = tmp_path / 'digits.pth'
    torch.save({'state_dict': model.state_dict(),
                'meta': {'epoch': 6, 'dataset_meta': {'classes': classes}}}, src)
    dst = tmp_path / 'digits_deploy.pth'
    assert tool.main([str(config), str(src), str(dst)]) == 0
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['dataset_meta']['classes'] == classes and meta['epoch'] == 6
    assert meta['reparameterized']['converted_from'] == 'digits.pth'


@pytest.fixture(scope='module')
def d2se_checkpoint(tmp_path_factory):
    """(config, checkpoint) of the real D2se (48 blocks) with synthetic BN statistics."""
    folder = tmp_path_factory.mktemp('d2se')
    config = write_classifier_config(folder, arch='D2se')
    return config, save_train_checkpoint(trained_classifier(config, seed=3),
                                         folder / 'd2se.pth')


@pytest.mark.slow
def test_deep_variant_with_synthetic_statistics_is_verified_in_float64(d2se_checkpoint,
                                                                       tmp_path):
    config, src = d2se_checkpoint
    report = convert_checkpoint(str(config), str(src), str(tmp_path / 'deploy.pth'))
    assert report.max_relative_error < 1e-12
    assert report.max_relative_error_float32 < 1e-3  # float32 rounding, for information


def test_wrong_fusion_is_refused_and_nothing_written(trained, tmp_path, monkeypatch):
    config, src, _ = trained
    exact = RepVGGBlock.get_equivalent_kernel_bias

    def off_by_a_little(block):
        kernel, bias = exact(block)
        return kernel, bias + 1e-6 * bias.abs().max()

    monkeypatch.setattr(RepVGGBlock, 'get_equivalent_kernel_bias', off_by_a_little)
    dst = tmp_path / 'deploy.pth'
    with pytest.raises(CheckpointError, match='differ by .* in float64.*the fusion is wrong'):
        convert_checkpoint(str(config), str(src), str(dst))
    assert not dst.exists()


def test_existing_dst_is_kept_unless_force(tool, trained, tmp_path, capsys):
    config, src, _ = trained
    dst = tmp_path / 'deploy.pth'
    dst.write_bytes(b'the user\'s earlier file')

    assert tool.main([str(config), str(src), str(dst)]) == 1
    assert dst.read_bytes() == b'the user\'s earlier file'
    assert 'pass --force' in capsys.readouterr().err

    assert tool.main([str(config), str(src), str(dst), '--force']) == 0
    assert 'state_dict' in torch.load(dst, weights_only=True)


def test_source_checkpoint_is_never_modified(tool, trained, tmp_path):
    config, src, _ = trained
    before = file_fingerprint(src)
    assert tool.main([str(config), str(src), str(tmp_path / 'deploy.pth')]) == 0
    assert file_fingerprint(src) == before


def test_destination_equal_to_source_is_refused_even_with_force(tool, trained, tmp_path,
                                                                capsys):
    config, src, _ = trained
    copy_of_src = tmp_path / 'train.pth'
    copy_of_src.write_bytes(src.read_bytes())
    before = file_fingerprint(copy_of_src)
    assert tool.main([str(config), str(copy_of_src), str(copy_of_src), '--force']) == 1
    assert 'is the source checkpoint' in capsys.readouterr().err
    assert file_fingerprint(copy_of_src) == before


def test_failure_inside_torch_save_leaves_old_dst_and_no_temporary_file(
        tool, trained, tmp_path, monkeypatch):
    config, src, _ = trained
    dst = tmp_path / 'deploy.pth'
    dst.write_bytes(b'old deploy checkpoint')

    def save_half_then_fail(obj, stream, *args, **kwargs):
        stream.write(b'PK\x03\x04 half a zip archive')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', save_half_then_fail)
    assert tool.main([str(config), str(src), str(dst), '--force']) == 1
    assert dst.read_bytes() == b'old deploy checkpoint'
    assert sorted(os.listdir(tmp_path)) == ['deploy.pth']


KILL_DURING_SAVE = """
import os, sys, time, torch
sys.argv[0] = {tool!r}
real_save = torch.save
def save_slowly(obj, stream, *args, **kwargs):
    stream.write(b'PK partial bytes of the new checkpoint')
    stream.flush()
    open({ready!r}, 'w').close()
    time.sleep(600)
torch.save = save_slowly
sys.path.insert(0, os.path.dirname({tool!r}))
import reparameterize_repvgg
sys.exit(reparameterize_repvgg.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize('dst_existed', [True, False])
def test_kill_9_during_write_leaves_old_dst_or_none(trained, tmp_path, dst_existed):
    config, src, _ = trained
    dst, ready = tmp_path / 'out' / 'deploy.pth', tmp_path / 'writing'
    dst.parent.mkdir()
    if dst_existed:
        dst.write_bytes(b'old deploy checkpoint')
    script = KILL_DURING_SAVE.format(tool=str(TOOL), ready=str(ready))
    process = subprocess.Popen(
        [sys.executable, '-c', script, str(config), str(src), str(dst), '--force'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if ready.exists() or process.poll() is not None:
                break
            time.sleep(0.1)  # polling the child, not waiting for a result
        assert ready.exists(), 'the converter never reached its save'
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    if dst_existed:
        assert dst.read_bytes() == b'old deploy checkpoint'
    else:
        assert not dst.exists()
    leftovers = [name for name in os.listdir(dst.parent) if name != 'deploy.pth']
    assert all(name.startswith('.deploy.pth.') and name.endswith('.partial')
               for name in leftovers)

"""ONNX export: the deploy model round-trips through ONNX Runtime, files are written safely."""
import os
from pathlib import Path

import pytest
import torch

from mmrepvgg.models import build_model, repvgg_classifier_cfg
from mmrepvgg.deploy.onnx_export import _check_against_onnxruntime as check_against_onnxruntime
from mmrepvgg.deploy.onnx_export import ONNX_TOLERANCE, export_onnx
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
from mmrepvgg.models import reparameterize_model
from lab.synthetic import randomize_batch_norms_

from conftest import load_tool

REPO = Path(__file__).resolve().parents[1]
A0_CONFIG = str(REPO / 'configs/repvgg-A0_4xb64-coslr-120e_in1k.py')


pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')


def _train_classifier(arch: str, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batch_norms_(build_model(repvgg_classifier_cfg(arch,
                                                                    num_classes=num_classes)))


@pytest.mark.parametrize('arch', [
    'A0', 'B1g2', pytest.param('D2se', marks=pytest.mark.slow)])  # D2se: ~35 s on 2 cores
def test_onnxruntime_matches_pytorch_deploy_model(arch, tmp_path):
    train_model = _train_classifier(arch)
    report = export_onnx(train_model, str(tmp_path / f'{arch}.onnx'), (1, 3, 64, 64),
                         dynamic_batch=True)
    assert report.converted
    assert report.max_relative_error < ONNX_TOLERANCE
    # Judge the file independently of the export's own check, on another batch size.
    deploy_model = reparameterize_model(train_model)
    error = check_against_onnxruntime(deploy_model, report.path, [torch.randn(3, 3, 64, 64)])
    assert error < ONNX_TOLERANCE
    assert os.listdir(tmp_path) == [f'{arch}.onnx']  # no temporary file left


def test_export_refuses_to_overwrite_without_force(tmp_path):
    existing = tmp_path / 'model.onnx'
    existing.write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='--force'):
        export_onnx(_train_classifier('A0'), str(existing), (1, 3, 32, 32))
    assert existing.read_bytes() == b'precious'


@pytest.fixture(scope='module')
def a0_train_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('checkpoints') / 'a0_train.pth'
    torch.save({'state_dict': _train_classifier('A0', num_classes=1000).state_dict()}, path)
    return str(path)


def test_cli_converts_a_train_checkpoint_with_a_notice(a0_train_checkpoint, tmp_path, capsys):
    output = tmp_path / 'a0.onnx'
    assert pytorch2onnx.main([A0_CONFIG, a0_train_checkpoint, str(output),
                              '--shape', '64', '64']) == 0
    printed = capsys.readouterr().out
    assert 'notice:' in printed and 'train form' in printed
    assert 'max relative error ONNX Runtime vs PyTorch' in printed
    assert output.is_file()


@pytest.mark.parametrize('argv, message', [
    (['missing.py', 'CKPT', 'OUT.onnx'], 'no such config file'),
    ([A0_CONFIG, 'missing.pth', 'OUT.onnx'], 'no such checkpoint file'),
])
def test_cli_names_missing_inputs_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pytorch2onnx.main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'OUT.onnx').exists()


def test_cli_keeps_an_existing_output(a0_train_checkpoint, tmp_path, capsys):
    output = tmp_path / 'a0.onnx'
    output.write_bytes(b'precious')
    assert pytorch2onnx.main([A0_CONFIG, a0_train_checkpoint, str(output),
                              '--shape', '32', '32']) == 1
    assert '--force' in capsys.readouterr().err
    assert output.read_bytes() == b'precious'


def test_cli_exports_a_dynamic_batch_by_default(a0_train_checkpoint, tmp_path):
    output = tmp_path / 'a0.onnx'
    assert pytorch2onnx.main([A0_CONFIG, a0_train_checkpoint, str(output),
                              '--shape', '32', '32']) == 0
    session = OnnxRuntimeModel(str(output)).session
    (logits, ) = session.run(None, {'input': torch.randn(2, 3, 32, 32).numpy()})
    assert logits.shape == (2, 1000)


def test_cli_fixes_the_batch_on_request(a0_train_checkpoint, tmp_path):
    output = tmp_path / 'a0.onnx'
    assert pytorch2onnx.main([A0_CONFIG, a0_train_checkpoint, str(output), '--shape', '32',
                              '32', '--batch-size', '3', '--no-dynamic-batch']) == 0
    assert OnnxRuntimeModel(str(output)).session.get_inputs()[0].shape == [3, 3, 32, 32]


def test_a_file_that_is_no_onnx_model_gets_onnx_runtimes_own_error_on_any_cpu(tmp_path,
                                                                              monkeypatch):
    """On x86 without VNNI the adapter reads the file's int8 weights before the session
    opens it; a file that is no model must still fail as ONNX Runtime says."""
    from mmrepvgg.deploy import onnx_runtime
    from mmrepvgg.deploy._host_cpu import host_cpu
    no_vnni = host_cpu(cpuinfo_text='model name : test CPU\nflags : avx2\n',
                       architecture='x86_64')
    assert no_vnni.saturates_int16_pairs
    monkeypatch.setattr(onnx_runtime, 'host_cpu', lambda threads=None: no_vnni)
    path = tmp_path / 'garbage.onnx'
    path.write_bytes(b'not a model at all')
    with pytest.raises(onnx_runtime.LOAD_ERRORS):
        OnnxRuntimeModel(str(path))

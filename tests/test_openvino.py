"""OpenVINO as a second runtime: FP32 IR equal to PyTorch, NNCF INT8 IR agreeing with
PyTorch FP32 on held-out digits, through the same tools; bad input gets one line."""
import os
import sys

import numpy as np
import pytest
import torch

openvino = pytest.importorskip('openvino')  # the [openvino] extra (requirements/tests.txt)

from mmrepvgg.apis.convert import build_train_model, load_repvgg_weights  # noqa: E402
from mmrepvgg.deploy.onnx_eval import preprocessed_batches  # noqa: E402
from mmrepvgg.deploy.onnx_export import to_deploy_copy, torch_logits  # noqa: E402
from mmrepvgg.deploy.openvino_runtime import export_openvino, openvino_logits  # noqa: E402
from mmrepvgg.engine import load_repvgg_config, parse_test_metrics  # noqa: E402
from mmrepvgg.models import build_model, repvgg_classifier_cfg  # noqa: E402
from mmrepvgg.synthetic import randomize_batch_norms_  # noqa: E402

from conftest import REPO_ROOT, load_tool  # noqa: E402
from test_int8 import export_in_workspace  # noqa: E402

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')
pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')
deployment_test = load_tool('tools/deployment/test.py')


def test_fp32_ir_computes_the_pytorch_deploy_model(tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    xml_path = export_openvino(model, str(tmp_path / 'a0.xml'), (1, 3, 32, 32))
    assert sorted(os.listdir(tmp_path)) == ['a0.bin', 'a0.xml']
    images = torch.randn(3, 3, 32, 32).numpy()  # another batch size than traced
    expected = torch_logits(to_deploy_copy(model)[0])(images)
    actual = openvino_logits(xml_path)(images)
    assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4


@pytest.fixture(scope='module')
def int8_ir(digits_workspace, digits_train_checkpoint):
    output = digits_workspace / 'a0_int8.xml'
    printed = export_in_workspace(digits_workspace, digits_train_checkpoint, output,
                                  '--backend', 'openvino', '--quantize', 'int8',
                                  '--calib-images', '64', '--check-images', '96', '--force')
    return str(output), printed


def test_int8_ir_is_quantized_and_agrees_with_pytorch(int8_ir, digits_workspace,
                                                      digits_train_checkpoint, monkeypatch):
    path, printed = int8_ir
    assert 'OpenVINO INT8 vs PyTorch FP32 top-1 agreement on 96 held-out' in printed
    assert 'CPU: ' in printed
    op_types = {op.get_type_name() for op in openvino.Core().read_model(path).get_ops()}
    assert 'FakeQuantize' in op_types
    # Independently of the tool's own line: PyTorch FP32 against the IR.
    monkeypatch.chdir(digits_workspace)
    cfg = load_repvgg_config(DIGITS_CONFIG)
    model = build_train_model(cfg)
    load_repvgg_weights(model, digits_train_checkpoint)
    reference = torch_logits(to_deploy_copy(model)[0])
    batch = next(preprocessed_batches(cfg, 'test_dataloader', 96, shuffle=False))
    agreement = np.mean(reference(batch.images).argmax(1) ==
                        openvino_logits(path)(batch.images).argmax(1))
    assert agreement >= 0.85


def test_deployment_test_tool_evaluates_the_ir(int8_ir, digits_workspace, tmp_path,
                                               monkeypatch, capsys):
    monkeypatch.chdir(digits_workspace)
    assert deployment_test.main([DIGITS_CONFIG, int8_ir[0], '--work-dir',
                                 str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert 0 <= parse_test_metrics(printed)['accuracy/top1'] <= 100
    assert 'OpenVINO' in printed and 'CPU: ' in printed


def test_an_ir_output_must_be_an_xml_file(digits_train_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, str(tmp_path / 'a.onnx'),
                           '--backend', 'openvino'])
    assert exit_info.value.code == 2 and 'name an .xml file' in capsys.readouterr().err


def test_an_existing_weights_file_is_kept_without_force(tmp_path):
    (tmp_path / 'a0.bin').write_bytes(b'precious')
    model = build_model(repvgg_classifier_cfg('A0', num_classes=10))
    with pytest.raises(FileExistsError, match='a0.bin exists'):
        export_openvino(model, str(tmp_path / 'a0.xml'), (1, 3, 32, 32))
    assert (tmp_path / 'a0.bin').read_bytes() == b'precious'
    assert not (tmp_path / 'a0.xml').exists()


def test_missing_openvino_is_one_line_naming_the_extra(digits_workspace,
                                                       digits_train_checkpoint, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import fails as if absent
    monkeypatch.delitem(sys.modules, 'mmrepvgg.deploy.openvino_runtime', raising=False)
    monkeypatch.chdir(digits_workspace)
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint,
                              str(tmp_path / 'a.xml'), '--backend', 'openvino']) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith('error: openvino is not installed') and '\n' not in error
    assert 'pip install "mmrepvgg[openvino]"' in error
    assert not os.listdir(tmp_path)


def test_prepare_for_inference_openvino_int8_is_close_to_pytorch_but_quantized():
    from mmrepvgg.apis.inference import prepare_for_inference
    from mmrepvgg.numerics import max_relative_error
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(2)]
    images = torch.randn(3, 3, 32, 32, generator=generator)  # held out, another batch
    expected = torch.from_numpy(torch_logits(to_deploy_copy(model)[0])(images.numpy()))
    int8_model = prepare_for_inference(model, backend='openvino-int8',
                                       calibration_images=calibration, num_threads=1)
    assert 1e-5 < max_relative_error(expected, int8_model(images)) < 0.3
    with pytest.raises(ValueError, match="backend='openvino-int8' needs calibration_images"):
        prepare_for_inference(model, backend='openvino-int8')

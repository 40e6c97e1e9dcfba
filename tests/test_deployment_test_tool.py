"""tools/deployment/test.py evaluates an ONNX file exactly as tools/test.py evaluates the
checkpoint it was exported from."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from torch import nn

from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import load_checkpoint
from mmrepvgg.dense._mmcv_ops import install_mmcv_ops_stand_in
from mmrepvgg.deploy._onnx_eval import _RuntimeClassifier as RuntimeClassifier
from mmrepvgg.deploy._onnx_eval import preprocessed_batches
from mmrepvgg.engine import load_repvgg_config

from conftest import REPO_ROOT, load_tool
from tool_output import parse_test_metrics

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')

pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')
deployment_test = load_tool('tools/deployment/test.py')


def test_fp32_onnx_top1_equals_tools_test_top1_on_the_same_checkpoint(
        digits_workspace, digits_train_checkpoint, tool_env, monkeypatch, capsys):
    monkeypatch.chdir(digits_workspace)  # the config's data_root is relative
    onnx_file = str(digits_workspace / 'fp32_for_test_tool.onnx')
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, onnx_file,
                              '--shape', '32', '32', '--force']) == 0
    work_dir = str(digits_workspace / 'test_tool')
    assert deployment_test.main([DIGITS_CONFIG, onnx_file, '--work-dir', work_dir]) == 0
    onnx_metrics = parse_test_metrics(capsys.readouterr().out)
    checkpoint_test = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, 'tools/test.py'), DIGITS_CONFIG,
         digits_train_checkpoint, '--work-dir', work_dir], cwd=digits_workspace,
        env=tool_env, capture_output=True, text=True)
    assert checkpoint_test.returncode == 0, checkpoint_test.stderr[-2000:]
    checkpoint_metrics = parse_test_metrics(checkpoint_test.stdout)
    assert set(onnx_metrics) == set(checkpoint_metrics) == {'accuracy/top1'}
    assert onnx_metrics['accuracy/top1'] == checkpoint_metrics['accuracy/top1']


@pytest.mark.slow  # torch.compile of the quantized A0: tens of seconds on 2 cores
def test_torch_int8_backend_reports_the_configs_metric_near_pytorch_fp32(
        digits_workspace, digits_train_checkpoint, monkeypatch, capsys):
    pytest.importorskip('torchao')
    monkeypatch.chdir(digits_workspace)
    cfg = load_repvgg_config(DIGITS_CONFIG)
    model = build_train_model(cfg)
    load_checkpoint(model, digits_train_checkpoint, 'convert')
    images, labels = (np.concatenate(part) for part in zip(*preprocessed_batches(
        cfg, 'test_dataloader', 10_000, shuffle=False)))
    with torch.no_grad():
        fp32_top1 = 100 * np.mean(model(torch.from_numpy(images)).numpy().argmax(1) == labels)

    assert deployment_test.main([DIGITS_CONFIG, digits_train_checkpoint, '--backend',
                                 'torch-int8', '--calib-images', '64', '--work-dir',
                                 str(digits_workspace / 'torch_int8_test')]) == 0
    printed = capsys.readouterr().out
    metrics = parse_test_metrics(printed)
    assert set(metrics) == {'accuracy/top1'} and len(labels) == 360
    # The 1-epoch model has close runners-up that a real quantization flips now and then;
    # a wrong graph or unnormalised images land near chance (10 %).
    assert abs(metrics['accuracy/top1'] - fp32_top1) <= 5.0
    assert 'PyTorch INT8 (PT2E, x86 Inductor quantizer, 64 calibration images)' in printed
    assert re.search(r'^CPU: \S', printed, re.MULTILINE)


def test_torch_int8_backend_refuses_onnx_runtime_kernels_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        deployment_test.main([DIGITS_CONFIG, 'CKPT', '--backend', 'torch-int8',
                              '--int8-kernels', 'u8u8'])
    assert exit_info.value.code == 2
    assert 'drop it for --backend torch-int8' in capsys.readouterr().err


def test_predictions_are_softmax_scores_with_the_arg_max_label():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    first, second = RuntimeClassifier(nn.Identity(), 'logits').predictions(logits, None)
    assert first.pred_label.tolist() == [1] and second.pred_label.tolist() == [0]
    assert torch.allclose(first.pred_score, torch.softmax(logits[0], dim=0))


def test_an_exported_classifier_builds_where_an_mmseg_runner_left_its_scope_current():
    install_mmcv_ops_stand_in()  # mmseg imports mmcv.ops; mmcv-lite has no compiled ops
    import mmseg.registry  # noqa: F401  (mmseg's registries, which have no ClsDataPreprocessor)
    with DefaultScope.overwrite_default_scope('mmseg'):
        classifier = RuntimeClassifier(nn.Identity(), 'logits')
    assert type(classifier.data_preprocessor).__name__ == 'ClsDataPreprocessor'


def test_tool_refuses_a_file_that_is_not_onnx_in_one_line(digits_workspace, tmp_path,
                                                          capsys):
    not_onnx = tmp_path / 'model.onnx'
    not_onnx.write_bytes(b'not a protobuf')
    assert deployment_test.main([DIGITS_CONFIG, str(not_onnx), '--work-dir',
                                 str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith('error: ') and 'ONNX Runtime cannot load it' in error
    assert '\n' not in error


def test_tool_names_a_missing_model_file(tmp_path, capsys):
    assert deployment_test.main([DIGITS_CONFIG, str(tmp_path / 'missing.onnx')]) == 1
    assert 'missing.onnx: no such' in capsys.readouterr().err


def test_tool_explains_missing_test_data(digits_train_checkpoint, digits_workspace, tmp_path,
                                         monkeypatch, capsys):
    onnx_file = str(tmp_path / 'model.onnx')
    monkeypatch.chdir(digits_workspace)
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, onnx_file,
                              '--shape', '32', '32']) == 0
    monkeypatch.chdir(tmp_path)  # no data/digits here
    assert deployment_test.main([DIGITS_CONFIG, onnx_file, '--work-dir',
                                 str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith('error: ') and 'data_root' in error and 'tools/demo.py' in error


def test_exports_take_the_test_pipeline_size_and_a_mismatch_is_one_line(
        digits_workspace, digits_train_checkpoint, tmp_path, monkeypatch, capsys):
    """Issue 16: FP32 exported at 224x224 while the data is 32x32 crashed test.py with a
    28-line ONNX Runtime traceback."""
    monkeypatch.chdir(digits_workspace)
    default, resized = str(tmp_path / 'default.onnx'), str(tmp_path / 'at64.onnx')
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, default]) == 0
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, resized,
                              '--shape', '64', '48']) == 0
    from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
    assert OnnxRuntimeModel(default).session.get_inputs()[0].shape[1:] == [3, 32, 32]
    assert OnnxRuntimeModel(resized).session.get_inputs()[0].shape[1:] == [3, 64, 48]
    capsys.readouterr()
    assert deployment_test.main([DIGITS_CONFIG, resized, '--work-dir', str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith('error: ') and '\n' not in error
    assert 'takes 64x48 images' in error and 'makes 32x32' in error


def test_the_imagenet_test_pipeline_size_is_its_center_crop():
    from mmengine.config import Config
    from mmrepvgg.deploy._onnx_eval import pipeline_image_size
    config = Config.fromfile(os.path.join(REPO_ROOT,
                                          'configs/repvgg-A0_4xb64-coslr-120e_in1k.py'))
    assert pipeline_image_size(config) == (224, 224)  # ResizeEdge 256, CenterCrop 224
    config.test_dataloader.dataset.pipeline = [dict(type='ResizeEdge', scale=256)]
    assert pipeline_image_size(config) is None  # depends on the image: --shape needed
    config.test_dataloader.dataset.pipeline = [dict(type='Resize', scale=(48, 32))]
    assert pipeline_image_size(config) == (32, 48)  # mmcv scales are (w, h)


def test_an_empty_model_file_is_one_line(tmp_path, capsys):
    empty = tmp_path / 'empty.onnx'
    empty.write_bytes(b'')
    assert deployment_test.main([DIGITS_CONFIG, str(empty), '--work-dir',
                                 str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert error == f'error: {empty}: the file is empty (0 bytes); export it again with ' \
        'tools/deployment/pytorch2onnx.py'


@pytest.mark.parametrize('shape', [['16', '32'], ['100000', '64'], ['32', '-5']])
def test_absurd_shapes_are_refused_before_any_work(shape, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pytorch2onnx.main([DIGITS_CONFIG, 'CKPT', str(tmp_path / 'out.onnx'), '--shape',
                           *shape])
    assert exit_info.value.code == 2
    assert 'pass a height and width from 32 to 4096' in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def _onnx_with(onnx_file, tmp_path, name, edit):
    """A copy of ``onnx_file`` named ``name``, its ONNX graph changed by ``edit``."""
    import onnx
    model = onnx.load(onnx_file)
    edit(model)
    edited = str(tmp_path / name)
    onnx.save(model, edited)
    return edited


@pytest.fixture
def digits_onnx(digits_workspace, digits_train_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(digits_workspace)  # the config's data_root is relative
    onnx_file = str(tmp_path / 'fp32.onnx')
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, onnx_file]) == 0
    return onnx_file


def test_onnx_file_with_nan_weights_is_not_evaluated(digits_onnx, tmp_path, capsys):
    """Issue 24: all-NaN weights were evaluated at 0.0 % with exit 0."""
    from onnx import numpy_helper

    def all_nan(model):
        for initializer in model.graph.initializer:
            values = numpy_helper.to_array(initializer)
            if values.dtype == np.float32:
                initializer.CopyFrom(numpy_helper.from_array(np.full_like(values, np.nan),
                                                             initializer.name))

    nan_onnx = _onnx_with(digits_onnx, tmp_path, 'nan.onnx', all_nan)
    capsys.readouterr()
    assert deployment_test.main([DIGITS_CONFIG, nan_onnx, '--work-dir', str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert 'test metrics' not in captured.out
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith(f'error: {nan_onnx}: gives NaN or infinite outputs')
    assert 'Traceback' not in captured.err


def test_onnx_file_whose_output_is_not_logits_is_one_line(digits_onnx, tmp_path, capsys):
    import onnx

    def rank_1_output(model):
        logits = model.graph.output[0]
        model.graph.node.append(onnx.helper.make_node(
            'ReduceMax', [logits.name], ['max_logit'], keepdims=0, axes=[1]))
        model.graph.output.remove(logits)
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            'max_logit', onnx.TensorProto.FLOAT, ['N']))

    rank_1 = _onnx_with(digits_onnx, tmp_path, 'rank1.onnx', rank_1_output)
    capsys.readouterr()
    assert deployment_test.main([DIGITS_CONFIG, rank_1, '--work-dir', str(tmp_path)]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith(f'error: {rank_1} gives an output of shape (')
    assert 'not logits (N, num_classes)' in error and 'Traceback' not in captured.err

"""OpenVINO as a second runtime: FP32 IR equal to PyTorch, NNCF INT8 IR agreeing with
PyTorch FP32 on held-out digits, through the same tools; bad input gets one line."""
import os
import sys

import numpy as np
import pytest
import torch

openvino = pytest.importorskip('openvino')  # the [openvino] extra (requirements/tests.txt)

from mmrepvgg.apis.convert import build_train_model  # noqa: E402
from mmrepvgg.checkpoint import load_checkpoint  # noqa: E402
from mmrepvgg.deploy._onnx_eval import preprocessed_batches  # noqa: E402
from mmrepvgg.deploy.onnx_export import torch_logits  # noqa: E402
from mmrepvgg.models import reparameterize_model  # noqa: E402
from mmrepvgg.deploy.openvino_runtime import OpenVINOModel, export_openvino  # noqa: E402
from mmrepvgg.engine import load_repvgg_config  # noqa: E402
from tool_output import parse_test_metrics  # noqa: E402
from mmrepvgg.models import build_model, repvgg_classifier_cfg  # noqa: E402
from lab.synthetic import randomize_batch_norms_  # noqa: E402

from conftest import REPO_ROOT, load_tool, needs_torch_for_nncf  # noqa: E402
from test_int8 import export_in_workspace  # noqa: E402

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')
pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')
deployment_test = load_tool('tools/deployment/test.py')


def test_fp32_ir_computes_the_pytorch_deploy_model(tmp_path):
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    xml_path = export_openvino(model, str(tmp_path / 'a0.xml'), (1, 3, 32, 32)).path
    assert sorted(os.listdir(tmp_path)) == ['a0.bin', 'a0.xml']
    images = torch.randn(3, 3, 32, 32).numpy()  # another batch size than traced
    expected = torch_logits(reparameterize_model(model))(images)
    actual = OpenVINOModel(xml_path)(images)
    assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-4


@pytest.fixture(scope='module')
def int8_ir(digits_workspace, digits_train_checkpoint):
    """Plain NNCF INT8 (no accuracy bound: every conv quantized) and what the tool printed."""
    output = digits_workspace / 'a0_int8.xml'
    printed = export_in_workspace(digits_workspace, digits_train_checkpoint, output,
                                  '--backend', 'openvino', '--quantize', 'int8',
                                  '--calib-images', '64', '--check-images', '96',
                                  '--int8-recipe', 'accuracy_bound_points=none', '--force')
    return str(output), printed


@needs_torch_for_nncf
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
    load_checkpoint(model, digits_train_checkpoint, 'convert')
    reference = torch_logits(reparameterize_model(model))
    batch = next(preprocessed_batches(cfg, 'test_dataloader', 96, shuffle=False))
    agreement = np.mean(reference(batch.images).argmax(1) ==
                        OpenVINOModel(path)(batch.images).argmax(1))
    assert agreement >= 0.85


@needs_torch_for_nncf
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


@needs_torch_for_nncf
def test_prepare_for_inference_openvino_int8_is_close_to_pytorch_but_quantized():
    from mmrepvgg.apis.inference import prepare_for_inference
    from mmrepvgg._numerics import max_relative_error
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg('A0', num_classes=10)))
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(2)]
    images = torch.randn(3, 3, 32, 32, generator=generator)  # held out, another batch
    expected = torch.from_numpy(torch_logits(reparameterize_model(model))(images.numpy()))
    int8_model = prepare_for_inference(model, backend='openvino-int8',
                                       calibration_images=calibration, num_threads=1)
    assert 1e-5 < max_relative_error(expected, int8_model(images)) < 0.3
    with pytest.raises(ValueError, match="backend='openvino-int8' needs calibration_images"):
        prepare_for_inference(model, backend='openvino-int8')


# Mixed precision. The references read the IR with OpenVINO's own API and identify a conv
# by its weights, compared with PyTorch's deploy-form convs (not by the name mapping under
# test).

SMALL_ARCH = dict(num_blocks=(1, 2, 2, 1), width_factor=(0.5, 0.5, 0.5, 1))


@pytest.fixture(scope='module')
def small_onnx(tmp_path_factory):
    """A random small RepVGG (stages of 1, 2, 2, 1 blocks: 7 convs with the stem; 10
    classes, 32x32) as an FP32 ONNX file, its deploy-form conv weights in graph order,
    calibration batches and labelled held-out batches (labels: PyTorch FP32's classes)."""
    from mmrepvgg.deploy.onnx_export import export_onnx
    torch.manual_seed(0)
    model = randomize_batch_norms_(build_model(repvgg_classifier_cfg(
        SMALL_ARCH, num_classes=10)))
    path = str(tmp_path_factory.mktemp('ov_mixed') / 'fp32.onnx')
    export_onnx(model, path, (1, 3, 32, 32), dynamic_batch=True)
    deploy_model = reparameterize_model(model)
    conv_weights = [module.weight.detach().numpy() for module in deploy_model.modules()
                    if isinstance(module, torch.nn.Conv2d)]
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator).numpy()
                   for _ in range(2)]
    images = torch.randn(16, 3, 32, 32, generator=generator).numpy()
    labels = torch_logits(deploy_model)(images).argmax(1)
    return path, model, conv_weights, calibration, [(images, labels)]


def _fp32_convs(ir) -> list:
    """Indices into the model's conv weights of the convs of an OpenVINO model that run
    unquantized (no FakeQuantize on the input, float weights); -1 for one that matches no
    weight. Raises if a conv is quantized on one input only."""
    convs = [op for op in ir.get_ordered_ops() if op.get_type_name() == 'Convolution']
    assert convs
    kept = []
    for op in convs:
        activation, weights = (op.input_value(port).get_node() for port in (0, 1))
        quantized_input = activation.get_type_name() == 'FakeQuantize'
        # NNCF stores int8 weights as Constant(i8) -> Convert -> Multiply(scale).
        float_weights = (weights.get_type_name() == 'Constant' and
                         weights.get_output_element_type(0) == openvino.Type.f32)
        assert quantized_input != float_weights, op.get_friendly_name()
        if float_weights:
            kept.append(weights.get_data())
    return kept


def _positions(kept_weights, conv_weights) -> list:
    return [next((position for position, weights in enumerate(conv_weights)
                  if weights.shape == kept.shape and np.array_equal(weights, kept)), -1)
            for kept in kept_weights]


@needs_torch_for_nncf
def test_convs_kept_fp32_are_exactly_the_ones_named(small_onnx):
    from mmrepvgg.deploy.openvino_runtime import _quantize_ir as quantize_ir
    from mmrepvgg.deploy._qdq import conv_nodes
    path, _, conv_weights, calibration, _ = small_onnx
    names = conv_nodes(path)
    assert len(names) == len(conv_weights) == 1 + sum(SMALL_ARCH['num_blocks'])
    assert _fp32_convs(quantize_ir(path, calibration)) == []
    assert _positions(_fp32_convs(quantize_ir(path, calibration, fp32_nodes=names[5:6])),
                      conv_weights) == [5]
    every = quantize_ir(path, calibration, fp32_nodes=names)
    assert sorted(_positions(_fp32_convs(every), conv_weights)) == list(range(len(names)))
    feeding_convs = [op for op in every.get_ops() if op.get_type_name() == 'FakeQuantize'
                     and any(target.get_node().get_type_name() == 'Convolution'
                             for target in op.output(0).get_target_inputs())]
    assert feeding_convs == []


@pytest.mark.parametrize('name', ['/model/backbone/stem/act/Relu',  # a node, not a Conv
                                  '/model/backbone/stem/branch_reparam/Conv/WithoutBiases'])
@needs_torch_for_nncf
def test_a_name_that_is_no_onnx_conv_is_refused_not_ignored(small_onnx, name):
    from mmrepvgg.deploy.openvino_runtime import _quantize_ir as quantize_ir
    path, _, _, calibration, _ = small_onnx
    with pytest.raises(ValueError, match='is no Conv node of'):
        quantize_ir(path, calibration, fp32_nodes=[name])


@needs_torch_for_nncf
def test_keep_fp32_keeps_the_most_sensitive_convs_in_the_saved_ir(small_onnx, tmp_path):
    from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
    from mmrepvgg.deploy._mixed_precision import layer_sensitivity
    from mmrepvgg.deploy._qdq import conv_nodes
    from mmrepvgg.deploy.quantization import Int8Recipe
    path, _, conv_weights, calibration, held_out = small_onnx
    report = onnx_to_openvino(path, str(tmp_path / 'mixed.xml'), calibration, held_out,
                              Int8Recipe(keep_fp32=2))
    ranking = layer_sensitivity(path, calibration, [held_out[0][0]])
    assert report.fp32_nodes == [row.node for row in ranking[:2]]
    saved = openvino.Core().read_model(report.path)
    positions = [conv_nodes(path).index(node) for node in report.fp32_nodes]
    assert sorted(_positions(_fp32_convs(saved), conv_weights)) == sorted(positions)


@needs_torch_for_nncf
def test_a_ranking_the_caller_already_has_is_used_as_given(small_onnx, tmp_path):
    from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
    from mmrepvgg.deploy._mixed_precision import LayerSensitivity
    from mmrepvgg.deploy._qdq import conv_nodes
    from mmrepvgg.deploy.quantization import Int8Recipe
    path, _, conv_weights, calibration, held_out = small_onnx
    names = conv_nodes(path)
    # Best first instead of worst first: a ranking no measurement would give.
    given = [LayerSensitivity(node, position, 0.0, 1.0)
             for position, node in reversed(list(enumerate(names)))]
    report = onnx_to_openvino(path, str(tmp_path / 'given.xml'), calibration, held_out,
                              Int8Recipe(keep_fp32=2), sensitivity=given)
    assert report.fp32_nodes == names[-1:-3:-1]
    saved = openvino.Core().read_model(report.path)
    last_two = [len(names) - 2, len(names) - 1]
    assert sorted(_positions(_fp32_convs(saved), conv_weights)) == last_two


@needs_torch_for_nncf
def test_max_drop_keeps_convs_fp32_until_top1_is_within_the_bound(small_onnx, tmp_path):
    from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
    from mmrepvgg.deploy.quantization import Int8Recipe
    path, _, _, calibration, held_out = small_onnx
    strict = onnx_to_openvino(path, str(tmp_path / 'strict.xml'), calibration, held_out,
                              Int8Recipe(max_drop_points=0))
    images, labels = held_out[0]
    # The labels are PyTorch FP32's classes: no drop means agreeing on every image.
    assert (OpenVINOModel(strict.path)(images).argmax(1) == labels).all()
    saved = openvino.Core().read_model(strict.path)
    assert len(_fp32_convs(saved)) == len(strict.fp32_nodes)


@pytest.mark.parametrize('recipe, held_out, message', [
    (dict(max_drop_points=0.3), None, 'ranks the convs on held-out images; pass some'),
    (dict(keep_fp32=1), None, 'ranks the convs on held-out images; pass some'),
    (dict(keep_fp32=1, max_drop_points=0.3), [], 'pass one'),
    (dict(keep_fp32=-1), [], 'must not be negative'),
    (dict(weight_bits='7', int8_kernels='u8u8'), None,
     'weight_bits, int8_kernels: ONNX Runtime settings; leave them at their defaults'),
])
def test_a_mixed_recipe_that_cannot_work_is_refused_before_any_work(small_onnx, tmp_path,
                                                                    recipe, held_out,
                                                                    message):
    from mmrepvgg.deploy.quantization import Int8Recipe
    path, model, _, calibration, _ = small_onnx
    with pytest.raises(ValueError, match=message) as error:
        export_openvino(model, str(tmp_path / 'a.xml'), (1, 3, 32, 32), calibration,
                        held_out, Int8Recipe(**recipe))
    assert '\n' not in str(error.value) and not os.listdir(tmp_path)


@needs_torch_for_nncf
def test_default_int8_goes_through_nncf_accuracy_control_and_holds_its_bound(
        small_onnx, tmp_path, monkeypatch):
    import nncf
    from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
    from mmrepvgg.deploy.quantization import Int8Recipe
    path, _, conv_weights, calibration, held_out = small_onnx
    calls = []
    accuracy_control = nncf.quantize_with_accuracy_control
    monkeypatch.setattr(nncf, 'quantize_with_accuracy_control',
                        lambda *args, **kwargs: calls.append(kwargs) or
                        accuracy_control(*args, **kwargs))
    report = onnx_to_openvino(path, str(tmp_path / 'bounded.xml'), calibration, held_out)
    assert [call['max_drop'] for call in calls] == [Int8Recipe().accuracy_bound_points]
    saved = openvino.Core().read_model(report.path)
    assert len(_fp32_convs(saved)) == len(report.fp32_nodes)
    # Reference: top-1 in points counted here with numpy; the labels are PyTorch FP32's
    # classes (FP32 100 %), so a 1-point bound on 16 images allows no image to change.
    images, labels = held_out[0]
    int8_top1_points = 100 * np.mean(OpenVINOModel(report.path)(images).argmax(1) == labels)
    quantized = any(op.get_type_name() == 'FakeQuantize' for op in saved.get_ops())
    assert int8_top1_points >= 100 - 1 or not quantized
    # Not reachable: NNCF hands back the FP32 model, and the report says every conv.
    assert quantized or len(report.fp32_nodes) == len(conv_weights)


def test_mixed_precision_without_calibration_is_refused(small_onnx, tmp_path):
    from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
    from mmrepvgg.deploy.quantization import Int8Recipe
    path, _, _, _, held_out = small_onnx
    with pytest.raises(ValueError, match='pass calibration batches'):
        onnx_to_openvino(path, str(tmp_path / 'a.xml'), None, held_out,
                         Int8Recipe(keep_fp32=1))
    assert not os.listdir(tmp_path)


def test_the_ir_never_replaces_the_onnx_file_it_is_converted_from(small_onnx, tmp_path):
    from mmrepvgg.checkpoint import CheckpointError
    from mmrepvgg.deploy.openvino_runtime import _onnx_to_openvino as onnx_to_openvino
    source = tmp_path / 'model.bin'  # an ONNX file named like the IR's weights
    source.write_bytes(open(small_onnx[0], 'rb').read())
    with pytest.raises(CheckpointError):
        onnx_to_openvino(str(source), str(tmp_path / 'model.xml'), overwrite=True)
    assert source.read_bytes() == open(small_onnx[0], 'rb').read()
    assert sorted(os.listdir(tmp_path)) == ['model.bin']


def _tool_mixed_ir(workspace, checkpoint: str, name: str, *recipe: str) -> tuple:
    """The digits model as an INT8 IR by pytorch2onnx with a mixed ``recipe``: the
    ``.xml`` path, what the tool printed, and how many convs the IR runs in FP32."""
    output = workspace / name
    printed = export_in_workspace(workspace, checkpoint, output, '--backend', 'openvino',
                                  '--quantize', 'int8', '--calib-images', '32', *recipe,
                                  '--force')
    return str(output), printed, len(_fp32_convs(openvino.Core().read_model(output)))


@needs_torch_for_nncf
@pytest.mark.slow  # ranks 22 convs (one quantization each)
def test_tool_keeps_the_named_number_of_convs_fp32(digits_workspace,
                                                   digits_train_checkpoint):
    _, printed, fp32_count = _tool_mixed_ir(digits_workspace, digits_train_checkpoint,
                                            'a0_keep2.xml', '--int8-recipe', 'keep_fp32=2',
                                            '--check-images', '32')
    assert 'mixed precision: 2 conv(s) kept FP32, most sensitive first: /model/' in printed
    assert fp32_count == 2


def _correct_fp32_and_ir(checkpoint, ir_path: str, num_images: int):
    """How many of the tool's ``num_images`` check images PyTorch FP32 (the deploy form of
    ``checkpoint``) and the IR at ``ir_path`` each classify as labelled (run in the digits
    workspace)."""
    cfg = load_repvgg_config(DIGITS_CONFIG)
    model = build_train_model(cfg)
    load_checkpoint(model, checkpoint, 'convert')
    batch = next(pytorch2onnx.held_out_batches(cfg, num_images))
    fp32_correct = (torch_logits(reparameterize_model(model))(batch.images).argmax(1) ==
                    batch.labels).sum()
    int8_correct = (OpenVINOModel(ir_path)(batch.images).argmax(1) == batch.labels).sum()
    return fp32_correct, int8_correct


@needs_torch_for_nncf
@pytest.mark.slow  # ranks 22 convs (one quantization each)
def test_tool_max_drop_is_met_on_the_check_images(digits_workspace, digits_train_checkpoint,
                                                  monkeypatch):
    output, printed, fp32_count = _tool_mixed_ir(digits_workspace, digits_train_checkpoint,
                                                 'a0_max_drop.xml', '--int8-recipe',
                                                 'max_drop_points=2',
                                                 '--check-images', '48')
    assert fp32_count == (printed.count('/model/') if 'mixed precision:' in printed else 0)
    # Independently: PyTorch FP32 against the IR on the same 48 test images.
    monkeypatch.chdir(digits_workspace)
    fp32_correct, int8_correct = _correct_fp32_and_ir(digits_train_checkpoint, output, 48)
    # 2 points of 48 images is 0 images; the tool compares with ONNX Runtime FP32, which
    # may differ from PyTorch on an image.
    assert int8_correct >= fp32_correct - 1


@needs_torch_for_nncf
def test_tool_default_is_bounded_and_says_truthfully_whether_it_held(
        digits_workspace, digits_train_checkpoint, monkeypatch):
    output, printed, fp32_count = _tool_mixed_ir(digits_workspace, digits_train_checkpoint,
                                                 'a0_bounded.xml', '--check-images', '64')
    assert "accuracy bound 1 points (NNCF's accuracy control" in printed
    quantized = 'FakeQuantize' in {op.get_type_name() for op in
                                   openvino.Core().read_model(output).get_ops()}
    assert ('held with' in printed) == quantized
    assert ('not reachable; NNCF kept every conv FP32' in printed) == (not quantized)
    assert fp32_count == (printed.count('/model/') if 'mixed precision:' in printed else 0)
    # Independently: PyTorch FP32 against the IR on the same 64 test images.
    monkeypatch.chdir(digits_workspace)
    fp32_correct, int8_correct = _correct_fp32_and_ir(digits_train_checkpoint, output, 64)
    # 1 point of 64 images is 0 images; NNCF compares with OpenVINO FP32, which may differ
    # from PyTorch on an image.
    assert int8_correct >= fp32_correct - 1


def test_tool_refuses_more_fp32_convs_than_the_model_has(
        digits_workspace, digits_train_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(digits_workspace)
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint,
                              str(tmp_path / 'a.xml'), '--backend', 'openvino',
                              '--quantize', 'int8', '--int8-recipe', 'keep_fp32=99',
                              '--calib-images', '8', '--check-images', '8']) == 1
    error = capsys.readouterr().err.strip()
    assert error == ('error: keep_fp32 99: the model has 22 convs; keep at most 22 FP32')
    assert not os.listdir(tmp_path)

"""The recommended inference path computes what the eager deploy model computes."""
import pytest
import torch

from mmrepvgg.models import build_model, repvgg_classifier_cfg
from mmrepvgg.apis import repvgg_convert
from mmrepvgg.apis.inference import prepare_for_inference
from mmrepvgg._numerics import max_relative_error
from lab.synthetic import randomize_batch_norms_

TOLERANCE = 1e-5


def _train_classifier(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batch_norms_(build_model(repvgg_classifier_cfg(arch, num_classes=10)))


@pytest.mark.parametrize('arch', ['A0', 'B1g2', 'D2se'])
def test_recommended_path_matches_eager_deploy(arch):
    train_model = _train_classifier(arch)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = repvgg_convert(train_model)(images)
    fast_model = prepare_for_inference(train_model)
    assert max_relative_error(expected, fast_model(images)) < TOLERANCE


@pytest.mark.slow  # torch.compile: ~25-35 s on 2 cores
def test_compiled_path_matches_eager_deploy():
    train_model = _train_classifier('A0')
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = repvgg_convert(train_model)(images)
    assert max_relative_error(
        expected, prepare_for_inference(train_model, backend='compile')(images)) < TOLERANCE


def test_recommended_path_leaves_the_train_model_untouched_unless_inplace():
    train_model = _train_classifier('A0')
    prepare_for_inference(train_model)
    assert not train_model.backbone.stem.deploy
    fast_model = prepare_for_inference(train_model, inplace=True)
    assert fast_model.deploy_model is train_model and train_model.backbone.stem.deploy


def test_recommended_path_accepts_a_deploy_model_and_rejects_unknown_backends():
    deploy_model = repvgg_convert(_train_classifier('A0'))
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = deploy_model(images)
    assert max_relative_error(expected, prepare_for_inference(deploy_model)(images)) < TOLERANCE
    with pytest.raises(ValueError, match='unknown inference backend'):
        prepare_for_inference(deploy_model, backend='tensorrt')


def test_int8_path_stays_close_to_the_deploy_model_but_is_quantized():
    train_model = _train_classifier('A0')
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(4)]
    images = torch.randn(3, 3, 32, 32, generator=generator)  # held out, another batch size
    with torch.no_grad():
        expected = repvgg_convert(train_model)(images)
    int8_model = prepare_for_inference(train_model, backend='onnxruntime-int8',
                                       calibration_images=calibration)
    error = max_relative_error(expected, int8_model(images))
    # 8-bit rounding through 22 convs (measured 0.10), neither FP32 nor another function.
    assert 1e-5 < error < 0.3


@pytest.mark.slow  # torch.compile of the quantized graph: tens of seconds on 2 cores
def test_torch_int8_path_is_the_pt2e_model_close_to_the_deploy_model():
    pytest.importorskip('torchao')
    from mmrepvgg.deploy.torch_int8 import PT2EInt8Model
    torch.manual_seed(0)
    train_model = randomize_batch_norms_(build_model(repvgg_classifier_cfg(
        dict(num_blocks=(1, 1, 1, 1), width_factor=(1, 1, 1, 1)), num_classes=3,
        base_channels=8)))
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(4)]
    images = torch.randn(8, 3, 32, 32, generator=generator)
    with torch.no_grad():
        expected = repvgg_convert(train_model)(images)
    int8_model = prepare_for_inference(train_model, backend='torch-int8',
                                       calibration_images=calibration)
    assert isinstance(int8_model, PT2EInt8Model)
    # 8-bit rounding through 5 convs, neither FP32 nor another function.
    assert 1e-5 < max_relative_error(expected, int8_model(images)) < 0.3


@pytest.mark.parametrize('backend', ['onnxruntime-int8', 'torch-int8'])
def test_int8_paths_ask_for_calibration_images(backend):
    with pytest.raises(ValueError, match='needs calibration_images'):
        prepare_for_inference(_train_classifier('A0'), backend=backend)


def test_the_inference_model_holds_each_weight_once_under_the_deploy_models_name():
    deploy_model = repvgg_convert(_train_classifier('A0'))
    fast_model = prepare_for_inference(deploy_model)
    assert list(fast_model.state_dict()) == [
        f'deploy_model.{key}' for key in deploy_model.state_dict()]

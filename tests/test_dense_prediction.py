"""RepVGG inside mmsegmentation and mmdetection: registries, the backbone's dense-prediction
options against independent references, whole-model conversion and segmentor ONNX export.

mmcv-lite lacks mmcv's compiled ops; the stand-in of :mod:`mmrepvgg.dense._mmcv_ops` lets
mmseg and mmdet import, and raises if a test path calls a compiled op (none does: a call
would fail the test). NMS runs on torchvision's.
"""
import copy
import glob
import os
import re

import onnxruntime
import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch.nn import functional as F

from mmrepvgg.dense._mmcv_ops import MissingMmcvOpError, install_mmcv_ops_stand_in

install_mmcv_ops_stand_in()

import mmdet.models  # noqa: E402,F401  (registers mmdet's models)
import mmseg.models  # noqa: E402,F401
from mmdet.registry import MODELS as MMDET_MODELS  # noqa: E402
from mmpretrain.models.backbones import RepVGG as MmpretrainRepVGG  # noqa: E402
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS  # noqa: E402
from mmseg.registry import MODELS as MMSEG_MODELS  # noqa: E402

from conftest import REPO_ROOT, load_tool  # noqa: E402
from mmrepvgg.apis.convert import build_train_model  # noqa: E402
from mmrepvgg.engine import RepVGGRunner  # noqa: E402
from mmrepvgg.models import RepVGG, RepVGGBlock, build_model, reparameterize_blocks  # noqa: E402
from mmrepvgg._numerics import max_relative_error, max_relative_output_error  # noqa: E402
from lab.synthetic import randomize_batch_norms_  # noqa: E402

SEG_CONFIG = f'{REPO_ROOT}/configs/mmseg/fcn_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py'
SEG_DEPLOY = f'{REPO_ROOT}/configs/mmseg/deploy/fcn_repvgg-A0-d8_deploy_4xb4-80k_ade20k-512x512.py'
DET_CONFIG = f'{REPO_ROOT}/configs/mmdet/retinanet_repvgg-A0_fpn_1x_coco.py'
DET_DEPLOY = f'{REPO_ROOT}/configs/mmdet/deploy/retinanet_repvgg-A0_deploy_fpn_1x_coco.py'
# Two blocks per stage (one for the last) and 16-64 channels keep the backbone small; all
# keys spelled out, as mmpretrain's RepVGG needs them.
TINY_ARCH = dict(num_blocks=(2, 2, 2, 1), width_factor=(0.25, 0.25, 0.25, 0.125),
                 group_layer_map=None, se_cfg=None, stem_channels=64)
DILATED = dict(strides=(2, 2, 1, 1), dilations=(1, 1, 2, 4), out_indices=(0, 1, 2, 3))
NON_SQUARE = (2, 3, 40, 56)
DENSE_TRAIN_CONFIGS = sorted(
    os.path.relpath(path, REPO_ROOT) for folder in ('mmseg', 'mmdet')
    for path in glob.glob(f'{REPO_ROOT}/configs/{folder}/**/*.py', recursive=True)
    if '/_base_/' not in path and '/deploy/' not in path)


def deploy_twin(train_config: str) -> str:
    """``x/fcn_repvgg-A0-d8_4xb4-....py`` -> ``x/deploy/fcn_repvgg-A0-d8_deploy_4xb4-....py``:
    the deploy tag goes after the backbone name."""
    folder, name = os.path.split(train_config)
    return os.path.join(folder, 'deploy', re.sub(r'(repvgg-[A-Z0-9]+(?:-d8)?)_', r'\1_deploy_',
                                                 name, count=1))


@pytest.mark.parametrize('registry', [MMSEG_MODELS, MMDET_MODELS, MMPRETRAIN_MODELS],
                         ids=['mmseg', 'mmdet', 'mmpretrain'])
@pytest.mark.parametrize('default_scope', [None, 'own', 'mmrepvgg'])
def test_scoped_type_builds_this_projects_class_from_every_registry(registry, default_scope):
    scope = registry.scope if default_scope == 'own' else default_scope
    built = []
    for kwargs in (dict(deploy=True), dict(block_type='qarepvgg')):
        cfg = dict(type='mmrepvgg.RepVGG', arch=TINY_ARCH, **kwargs)
        if scope is None:
            built.append(registry.build(cfg))
        else:
            with DefaultScope.overwrite_default_scope(scope):
                built.append(registry.build(cfg))
    assert all(type(model) is RepVGG for model in built)
    assert built[0].deploy and built[1].block_type == 'qarepvgg'


def test_dilated_strided_stages_match_mmpretrains_repvgg_in_both_forms():
    """mmpretrain's RepVGG supports strides and dilations: the same weights, the same
    outputs, non-square input, every stage; the deploy form too."""
    ours = randomize_batch_norms_(RepVGG(TINY_ARCH, **DILATED)).eval()
    reference = MmpretrainRepVGG(TINY_ARCH, **DILATED)
    reference.load_state_dict(ours.state_dict(), strict=True)
    reference.eval()  # mmpretrain's train() returns None
    images = torch.randn(*NON_SQUARE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(images)
        train_outputs = ours(images)
        reparameterize_blocks(ours)
        deploy_outputs = ours(images)
    assert [tuple(out.shape[2:]) for out in expected] == [(10, 14), (5, 7), (5, 7), (5, 7)]
    assert max_relative_error(list(expected), list(train_outputs)) < 1e-6
    assert max_relative_error(list(expected), list(deploy_outputs)) < 1e-5


@pytest.mark.parametrize('stride, dilation', [(1, 2), (2, 3), (1, 4)])
def test_a_dilated_block_is_the_sum_of_its_branches_run_by_torch(stride, dilation):
    block = RepVGGBlock(8, 8, stride=stride, dilation=dilation)
    randomize_batch_norms_(block).eval()
    images = torch.randn(1, 8, 13, 17, generator=torch.Generator().manual_seed(1))

    def conv_bn(branch, padding, branch_dilation):
        out = F.conv2d(images, branch.conv.weight, stride=stride, padding=padding,
                       dilation=branch_dilation)
        norm = branch.norm
        return F.batch_norm(out, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                            eps=norm.eps)

    with torch.no_grad():
        expected = conv_bn(block.branch_3x3, dilation, dilation) + conv_bn(block.branch_1x1, 0, 1)
        if stride == 1:
            norm = block.branch_norm
            expected = expected + F.batch_norm(images, norm.running_mean, norm.running_var,
                                               norm.weight, norm.bias, eps=norm.eps)
        expected = F.relu(expected)
        train_output = block(images)
        deploy_output = block.switch_to_deploy()(images)
    assert train_output.shape == expected.shape
    assert max_relative_error(expected, train_output) < 1e-6
    assert max_relative_error(expected, deploy_output) < 1e-5


def test_syncbn_backbone_fuses_exactly_and_frozen_or_norm_eval_stages_stay_put():
    backbone = RepVGG(TINY_ARCH, norm_cfg=dict(type='SyncBN'), frozen_stages=1,
                      norm_eval=True, with_cp=True, **DILATED)
    assert any(isinstance(module, torch.nn.SyncBatchNorm) for module in backbone.modules())
    randomize_batch_norms_(backbone)
    backbone.train()
    assert not any(module.training for module in backbone.modules()
                   if isinstance(module, torch.nn.SyncBatchNorm))  # norm_eval
    assert not any(param.requires_grad for param in backbone.stage_1.parameters())
    deploy = build_model(dict(type='RepVGG', arch=TINY_ARCH, deploy=True, **DILATED))
    train_form = copy.deepcopy(backbone)
    reparameterize_blocks(backbone)
    deploy.load_state_dict(backbone.state_dict(), strict=True)
    assert max_relative_output_error(train_form, deploy, NON_SQUARE) < 1e-5


def _train_checkpoint(config, path):
    model = randomize_batch_norms_(build_train_model(config))
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return model


@pytest.mark.parametrize('config, deploy_config', [(SEG_CONFIG, SEG_DEPLOY),
                                                   (DET_CONFIG, DET_DEPLOY)],
                         ids=['fcn', 'retinanet'])
def test_a_segmentor_and_a_detector_convert_and_load_strictly_into_their_deploy_config(
        config, deploy_config, tmp_path, capsys):
    train_model = _train_checkpoint(config, tmp_path / 'train.pth')
    tool = load_tool('tools/reparameterize_repvgg.py')
    assert tool.main([config, str(tmp_path / 'train.pth'), str(tmp_path / 'deploy.pth')]) == 0
    assert 'RepVGG-A0' in capsys.readouterr().out
    cfg = Config.fromfile(deploy_config)
    deploy_model = build_model(cfg.model, cfg.default_scope)
    deploy_state = torch.load(tmp_path / 'deploy.pth', weights_only=False)['state_dict']
    deploy_model.load_state_dict(deploy_state, strict=True)
    assert not any(isinstance(module, RepVGGBlock) and not module.deploy
                   for module in deploy_model.modules())
    # The model's own outputs (segmentation logits; class scores and box deltas per level).
    assert max_relative_output_error(train_model, deploy_model, (1, 3, 64, 96)) <= 1e-4


def test_segmentor_exports_logits_at_input_resolution_checked_by_onnxruntime(tmp_path):
    _train_checkpoint(SEG_CONFIG, tmp_path / 'train.pth')
    tool = load_tool('tools/deployment/pytorch2onnx.py')
    onnx_path = tmp_path / 'fcn.onnx'
    assert tool.main([SEG_DEPLOY, str(tmp_path / 'train.pth'), str(onnx_path),
                      '--shape', '48', '80']) == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    images = torch.randn(2, 3, 48, 80).numpy()
    (logits, ) = session.run(None, {session.get_inputs()[0].name: images})
    assert logits.shape == (2, 150, 48, 80)


def test_a_detector_config_is_refused_by_the_onnx_tool_in_one_line(tmp_path, capsys):
    tool = load_tool('tools/deployment/pytorch2onnx.py')
    assert tool.main([DET_CONFIG, str(tmp_path / 'none.pth'), str(tmp_path / 'x.onnx')]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith('error: ') and 'detector' in error and '\n' not in error
    assert not (tmp_path / 'x.onnx').exists()


def test_int8_of_a_detector_is_refused_in_one_line_naming_what_is_missing(tmp_path, capsys):
    """(A segmentor's INT8 export: tests/test_seg_int8.py.)"""
    tool = load_tool('tools/deployment/pytorch2onnx.py')
    assert tool.main([DET_CONFIG, str(tmp_path / 'none.pth'), str(tmp_path / 'x.onnx'),
                      '--quantize', 'int8']) == 1
    error = capsys.readouterr().err.strip()
    missing = 'apart from the FP32 box decoding and NMS of its head, which is not built'
    assert error.startswith('error: ') and missing in error and '\n' not in error
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize('config', [SEG_CONFIG, DET_CONFIG])
def test_the_image_classification_api_refuses_a_dense_config_in_one_line(config, tmp_path,
                                                                         capsys):
    image_demo = load_tool('tools/image_demo.py')
    image = tmp_path / 'image.png'
    from PIL import Image
    Image.new('RGB', (32, 32)).save(image)  # a valid image: the config is what is refused
    assert image_demo.main([str(image), config, str(tmp_path / 'none.pth')]) == 1
    (line, ) = capsys.readouterr().err.strip().splitlines()
    scope = 'mmseg' if config == SEG_CONFIG else 'mmdet'
    assert line.startswith('error: ') and f'an {scope} config' in line


def test_stand_in_ops_raise_and_nms_is_torchvisions():
    from mmcv.ops import batched_nms, roi_align
    boxes = torch.rand(1, 4) * 10
    with pytest.raises(MissingMmcvOpError, match='full mmcv'):
        roi_align(torch.rand(1, 1, 8, 8), torch.cat([torch.zeros(1, 1), boxes], 1), (2, 2))
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 2, generator=generator) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(200, 2, generator=generator) * 20], 1)
    scores = torch.rand(200, generator=generator)
    labels = torch.randint(0, 3, (200, ), generator=generator)
    _, kept = batched_nms(boxes, scores, labels, dict(type='nms', iou_threshold=0.5))
    expected = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    assert 0 < len(kept) < 200
    assert set(kept.tolist()) == set(expected.tolist())


def test_a_pspnet_size_the_exporter_cannot_trace_is_refused_in_one_line(tmp_path, capsys):
    psp_config = f'{REPO_ROOT}/configs/mmseg/pspnet_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py'
    _train_checkpoint(psp_config, tmp_path / 'train.pth')
    tool = load_tool('tools/deployment/pytorch2onnx.py')
    # 40 / 8 = 5: not a multiple of the pool scales 2, 3 and 6.
    assert tool.main([psp_config, str(tmp_path / 'train.pth'), str(tmp_path / 'psp.onnx'),
                      '--shape', '40', '40']) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith('error: the segmentor does not export at 40x40') and '\n' not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ['train.pth']


@pytest.mark.slow
@pytest.mark.parametrize('train_config', DENSE_TRAIN_CONFIGS)
def test_every_shipped_dense_config_fuses_into_its_deploy_twin(train_config):
    """Each segmentor and detector config builds, and its fused weights load strictly into
    the model of its deploy twin (same keys and shapes)."""
    model = build_train_model(os.path.join(REPO_ROOT, train_config))
    assert reparameterize_blocks(model) > 0
    deploy_cfg = Config.fromfile(os.path.join(REPO_ROOT, deploy_twin(train_config)))
    deploy_model = build_model(deploy_cfg.model, deploy_cfg.default_scope)
    deploy_model.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize('config', ['configs/mmseg/digits/fcn_repvgg-A0-d8_digits.py',
                                    'configs/mmdet/digits/fcos_repvgg-A0_fpn_digits.py'],
                         ids=['fcn', 'fcos'])
def test_each_runner_of_a_process_writes_its_visual_logs_into_its_own_work_dir(
        config, tmp_path):
    # mmseg's and mmdet's runtimes name their visualizer 'visualizer': every later Runner of a
    # process (the dense demo's deploy run, a notebook's second run) took the first one's,
    # and wrote its config and scalars into the first run's folder.
    for run in ('first', 'second'):  # in the same second, most likely
        cfg = Config.fromfile(os.path.join(REPO_ROOT, config))
        cfg.work_dir = str(tmp_path / run)
        RepVGGRunner.from_cfg(cfg)  # the configs' runner_type, as mmseg's train.py builds it
        assert len(glob.glob(str(tmp_path / run / '*' / 'vis_data' / 'config.py'))) == 1, run

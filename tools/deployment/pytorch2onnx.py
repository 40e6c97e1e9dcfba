"""Export a RepVGG checkpoint to ONNX (deploy form), verified against ONNX Runtime; with
``--quantize int8``, a static INT8 file for ONNX Runtime calibrated on the config's data;
with ``--backend openvino``, an OpenVINO IR (``.xml`` + ``.bin``; INT8 by NNCF).

    python tools/deployment/pytorch2onnx.py \
        configs/deploy/repvgg-A0_deploy_4xb64-coslr-120e_in1k.py A0.pth repvgg-A0.onnx
    python tools/deployment/pytorch2onnx.py configs/digits/repvgg-A0_digits.py \
        epoch_6.pth a0_int8.onnx --quantize int8 --calib-images 256
    python tools/deployment/pytorch2onnx.py configs/digits/repvgg-A0_digits.py \
        epoch_6.pth a0_int8.xml --backend openvino --quantize int8
    python tools/deployment/pytorch2onnx.py configs/digits/repvgg-A0_digits.py \
        epoch_6.pth a0_int8.onnx --quantize int8 --int8-recipe max_drop_points=0.5
    python tools/deployment/pytorch2onnx.py configs/mmseg/digits/fcn_repvgg-A0-d8_digits.py \
        iter_400.pth fcn_int8.onnx --quantize int8

``--int8-recipe`` sets the fields of :class:`mmrepvgg.deploy.quantization.Int8Recipe`
(calibration method, mixed precision, weight bits, INT8 kernels, accuracy bound);
its defaults are the automatic per-CPU choice, accuracy-bounded: past a 1-point top-1 drop
on the check images (mIoU for an mmseg segmentor), cheaper-first recipe steps are added
until the drop is within it, and the last line printed names the recipe chosen and the
change it measured. A segmentor's file takes images and gives logits at their size.

The input size is the one the config's test pipeline makes (a segmentor's whose pipeline
keeps the image size: its data preprocessor's ``size``) unless ``--shape``; the batch
dimension is dynamic unless ``--no-dynamic-batch``. A train-form checkpoint is fused
first (structural re-parameterization), with a notice. INT8 figures name the CPU.
"""
import argparse
import sys

import numpy as np
import torch

from mmrepvgg._utils import (MAX_BATCH_IMAGES, MAX_DATASET_IMAGES, MissingExtraError,
                             input_shape_problem, int_in)
from mmrepvgg.apis.convert import ConfigError, build_train_model
from mmrepvgg.checkpoint import CheckpointError, check_output, load_checkpoint
from mmrepvgg.engine import load_repvgg_config
from mmrepvgg.engine._config import KeyValueAction
from mmrepvgg.models.repvgg import image_channels

try:
    from mmrepvgg.deploy._host_cpu import INT8_WEIGHT_MAX, host_cpu, int8_kernel_choice
    from mmrepvgg.deploy._mixed_precision import agreement
    from mmrepvgg.deploy._onnx_eval import pipeline_image_size, preprocessed_batches
    from mmrepvgg.deploy.onnx_export import (DEFAULT_OPSET, OnnxExportError, export_onnx,
                                             torch_logits)
    from mmrepvgg.deploy.quantization import Int8Recipe, export_int8
    from mmrepvgg.dense.segmentation import SegmentationLogits, export_segmentor_onnx
    from mmrepvgg.models import reparameterize_model
except MissingExtraError as missing:
    sys.exit(f'error: {missing}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the deploy form of a RepVGG model to ONNX and check it with '
        'onnx.checker and ONNX Runtime; optionally quantize it to static INT8.')
    parser.add_argument('config', help='train or deploy config of the model')
    parser.add_argument('checkpoint', help='train- or deploy-form checkpoint: file, URL or '
                        'model zoo name (only read)')
    parser.add_argument('output', help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input image size (default: the size the config's test "
                        'pipeline makes); calibration and check images are resized to it')
    parser.add_argument('--batch-size', type=int_in(1, MAX_BATCH_IMAGES), default=1,
                        help='batch size traced (default: 1); fixed in the file with '
                        '--no-dynamic-batch')
    parser.add_argument('--dynamic-batch', action=argparse.BooleanOptionalAction,
                        default=True, help='make the batch dimension symbolic (default: '
                        'yes; --no-dynamic-batch fixes it to --batch-size)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset version (default: {DEFAULT_OPSET})')
    parser.add_argument('--backend', choices=('onnxruntime', 'openvino'),
                        default='onnxruntime', help='onnxruntime: an .onnx file (default); '
                        'openvino: an OpenVINO IR, OUTPUT.xml + OUTPUT.bin ([openvino] extra)')
    parser.add_argument('--quantize', choices=('int8', ),
                        help='int8: static per-channel INT8 (QDQ for ONNX Runtime, NNCF for '
                        "OpenVINO), calibrated on the config's training images")
    parser.add_argument('--calib-images', type=int_in(1, MAX_DATASET_IMAGES), default=256,
                        help='training images to calibrate on (default: 256)')
    parser.add_argument('--check-images', type=int_in(1, MAX_DATASET_IMAGES), default=512,
                        help='held-out test images on which INT8 and FP32 top-1 (a '
                        "segmentor's: mIoU) are compared (default: 512)")
    parser.add_argument('--int8-recipe', nargs='+', action=KeyValueAction, metavar='KEY=VALUE',
                        default={}, help='with --quantize int8: the INT8 recipe, e.g. '
                        'calibration_method=minmax|percentile|entropy (entropy: ONNX '
                        'Runtime only); keep_fp32=N (mixed precision: the N convs most '
                        'sensitive to INT8, ranked on the check images, stay FP32) or '
                        'max_drop_points=POINTS (as few as keep INT8 top-1 on the check '
                        'images within POINTS of FP32; OpenVINO: by NNCF\'s accuracy '
                        'control, accuracy_bound_points by default); ONNX Runtime only: '
                        'weight_bits=auto|8|7 (auto: 7 on x86 CPUs without VNNI, which keeps '
                        'their fast u8s8 kernels exact), int8_kernels=auto|u8s8|u8u8 (of '
                        'the check); accuracy_bound_points=POINTS|none (default 1.0: past '
                        'that top-1 drop on the check images, cross-layer equalization, then '
                        'FP32 fallback of the most sensitive convs are added until it holds; '
                        'none: the recipe as given)')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        metavar='KEY=VALUE', help='override config entries, e.g. '
                        'train_dataloader.dataset.data_root=DIR')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUTPUT')
    args = parser.parse_args(argv)
    if args.shape and input_shape_problem('--shape', *args.shape):
        parser.error(input_shape_problem('--shape', *args.shape))
    if not 7 <= args.opset <= 20:
        parser.error(f'--opset {args.opset}: the exporter supports opsets 7 to 20; '
                     f'{DEFAULT_OPSET} is the default')
    if args.quantize and not args.dynamic_batch:
        parser.error('--quantize int8 writes a dynamic-batch file; drop --no-dynamic-batch')
    if args.quantize and args.opset < 13:
        parser.error(f'--opset {args.opset}: per-channel INT8 needs opset 13 or later')
    if args.int8_recipe and not args.quantize:
        parser.error('--int8-recipe chooses an INT8 recipe; add --quantize int8')
    try:
        args.recipe = Int8Recipe.from_options(args.int8_recipe, opset=args.opset,
                                              progress=print_progress)
    except ValueError as error:
        parser.error(f'--int8-recipe: {error}')
    onnxruntime_only = sorted(set(args.int8_recipe) & {
        'weight_bits', 'int8_kernels'})
    if onnxruntime_only and args.backend == 'openvino':
        parser.error(f'--int8-recipe {", ".join(onnxruntime_only)} set the ONNX Runtime '
                     'file; drop them for --backend openvino')
    if args.backend == 'openvino':
        if args.recipe.calibration_method == 'entropy':
            parser.error('--backend openvino: the entropy method is an ONNX Runtime '
                         'recipe; choose minmax or percentile, or use --backend onnxruntime')
        if not args.output.endswith('.xml'):
            parser.error(f'OUTPUT {args.output}: an OpenVINO IR is NAME.xml (its weights go '
                         'to NAME.bin); name an .xml file')
        if not args.dynamic_batch:
            parser.error('--backend openvino writes a dynamic-batch IR; drop '
                         '--no-dynamic-batch')
    for role in ('checkpoint', 'config'):
        try:
            check_output(args.output, inputs=(getattr(args, role), ), overwrite=True)
        except CheckpointError:
            parser.error(f'OUTPUT {args.output} is the {role} it is made from; name a new '
                         '.onnx file (nothing was written)')
    return args


def print_progress(batch: int, batches: int, images: int) -> None:
    print(f'calibrating: batch {batch}/{batches} ({images} images)', flush=True)


def resized(images: np.ndarray, size, mode: str = 'bilinear') -> np.ndarray:
    """``images`` ``(N, C, H, W)`` resized to ``size`` (``(N, H, W)`` label maps: with
    mode ``'nearest'``); unchanged if of that size, or labels ``(N, )``."""
    if images.ndim < 3 or tuple(images.shape[-2:]) == tuple(size):
        return images
    batch = torch.from_numpy(images).float()
    batch = batch[:, None] if images.ndim == 3 else batch
    return torch.nn.functional.interpolate(
        batch, size=tuple(size), mode=mode, align_corners=None if mode == 'nearest' else False
    ).numpy().reshape(*images.shape[:-2], *size).astype(images.dtype)


def print_fp32_convs(fp32_nodes, order: str = 'most sensitive first') -> None:
    if fp32_nodes:
        print(f'mixed precision: {len(fp32_nodes)} conv(s) kept FP32, {order}: '
              f'{", ".join(fp32_nodes)}')


def held_out_batches(cfg, num_images: int, batch_size=None):
    """``num_images`` of the config's test images in a seeded random order: a data set of
    class folders lists its images class by class, and its first images are a few classes."""
    return preprocessed_batches(cfg, 'test_dataloader', num_images, shuffle=True,
                                batch_size=batch_size)


def export_quantized(args: argparse.Namespace, cfg, model, size) -> int:
    # mmseg's preprocessor stacks only images of one size (it pads in training only): one
    # to a batch where the test pipeline keeps each image's size.
    keeps_size = isinstance(model, SegmentationLogits) and pipeline_image_size(cfg) is None
    batch_size = 1 if keeps_size else None
    calibration = [resized(batch.images, size) for batch in preprocessed_batches(
        cfg, 'train_dataloader', args.calib_images, shuffle=True,
        pipeline_from='test_dataloader', batch_size=batch_size)]
    held_out = [(resized(images, size), resized(labels, size, 'nearest'))
                for images, labels in held_out_batches(cfg, args.check_images, batch_size)]
    cpu = host_cpu()
    if args.backend == 'openvino':
        return export_openvino_ir(args, model, size, calibration, held_out, cpu)
    report = export_int8(model, args.output, calibration, held_out, args.recipe, args.force)
    kernels = int8_kernel_choice(cpu, args.recipe.int8_kernels,
                                 INT8_WEIGHT_MAX[report.weights.bits])
    print(f'exported {args.output} (INT8 QDQ, per-channel {report.weights.bits}-bit weights '
          f'({report.weights.reason}), {report.method} '
          f'calibration on {report.calibration_images} training images, opset '
          f'{args.opset}, input (N, {calibration[0].shape[1]}, {size[0]}, {size[1]}))')
    print_fp32_convs(report.fp32_nodes)
    print(f'FP32 export: max relative error ONNX Runtime vs PyTorch '
          f'{report.fp32_max_relative_error:.2e}')
    print(f'CPU: {cpu.describe()}; ONNX Runtime INT8 kernels: {kernels.kernels} '
          f'({kernels.reason})')
    print(report.agreement.describe('FP32', 'INT8'))
    print(report.describe_outcome())
    return 0


def export_openvino_ir(args: argparse.Namespace, model, size, calibration, held_out,
                       cpu) -> int:
    from mmrepvgg.deploy.openvino_runtime import OpenVINOModel, export_openvino
    report = export_openvino(model, args.output, (1, image_channels(model), *size),
                             calibration, held_out, args.recipe, args.force)
    xml_path = report.path
    precision = ('FP32' if calibration is None else
                 f'INT8 (NNCF, {args.recipe.calibration_method} calibration on '
                 f'{sum(len(batch) for batch in calibration)} training images)')
    print(f'exported {xml_path} and its .bin (OpenVINO IR, {precision}, input (N, '
          f'{image_channels(model)}, {size[0]}, {size[1]}))')
    bound = report.bound_points
    print_fp32_convs(report.fp32_nodes, 'most sensitive first' if bound is None else
                     "by NNCF's accuracy control, in graph order")
    print(f'CPU: {cpu.describe()}')
    if held_out:
        measured = agreement(torch_logits(reparameterize_model(model)),
                             OpenVINOModel(xml_path), held_out)
        print(measured.describe('PyTorch FP32', 'OpenVINO ' + precision.split()[0]))
    if bound is not None:
        print(f"accuracy bound {bound:g} points (NNCF's accuracy control, OpenVINO INT8 vs "
              f'FP32 on the check images): ' + (
                  f'held with {len(report.fp32_nodes)} conv(s) FP32' if report.quantized else
                  'not reachable; NNCF kept every conv FP32 (the IR computes in FP32)'))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_output(args.output, overwrite=args.force)  # before any work
        cfg = load_repvgg_config(args.config, args.cfg_options)
        if cfg.get('default_scope') == 'mmdet' and args.quantize:
            raise ConfigError(f'{args.config}: a detector config; INT8 of a detector needs '
                              'its backbone and neck exported apart from the FP32 box '
                              'decoding and NMS of its head, which is not built; convert it '
                              'with tools/reparameterize_repvgg.py instead')
        if cfg.get('default_scope') == 'mmdet':
            raise ConfigError(f'{args.config}: a detector config; ONNX export covers '
                              'classifiers and mmseg segmentors (detection post-processing '
                              'does not export); convert it with '
                              'tools/reparameterize_repvgg.py instead')
        segmentor = cfg.get('default_scope') == 'mmseg'
        model = build_train_model(cfg)
        state = load_checkpoint(model, args.checkpoint, 'convert').source
        if state.form == 'train':
            print(f'notice: {args.checkpoint} is in train form; fusing its blocks into the '
                  'deploy form before the export')
        size = tuple(args.shape or ()) or pipeline_image_size(cfg)
        if size is None and segmentor:  # a pipeline that keeps each image's size
            size = tuple(cfg.model.get('data_preprocessor', {}).get('size') or ()) or None
        if size is None:
            raise ConfigError(f"{args.config}: its test pipeline's image size depends on "
                              'the image (no fixed Resize or CenterCrop); pass --shape H W')
        # A segmentor exports its logits at the input size; a classifier its class scores.
        exported = SegmentationLogits(model) if segmentor else model
        if args.quantize:
            return export_quantized(args, cfg, exported, size)
        if args.backend == 'openvino':
            return export_openvino_ir(args, exported, size, None, None, host_cpu())
        input_shape = (args.batch_size, image_channels(model), *size)
        export = export_segmentor_onnx if segmentor else export_onnx
        report = export(model, args.output, input_shape, dynamic_batch=args.dynamic_batch,
                        opset=args.opset, overwrite=args.force)
    except (ConfigError, CheckpointError, OnnxExportError, FileExistsError, ValueError,
            MissingExtraError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    batch = 'N' if report.dynamic_batch else report.input_shape[0]
    print(f'exported {args.output} (opset {report.opset}, input '
          f'({batch}, {", ".join(map(str, report.input_shape[1:]))}))')
    print(f'onnx.checker: passed; max relative error ONNX Runtime vs PyTorch: '
          f'{report.max_relative_error:.2e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

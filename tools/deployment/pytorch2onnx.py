"""Export a RepVGG checkpoint to ONNX (deploy form), verified against ONNX Runtime; with
``--quantize int8``, a static INT8 file for ONNX Runtime calibrated on the config's data.

    python tools/deployment/pytorch2onnx.py \
        configs/deploy/repvgg-A0_deploy_4xb64-coslr-120e_in1k.py A0.pth repvgg-A0.onnx
    python tools/deployment/pytorch2onnx.py configs/digits/repvgg-A0_digits.py \
        epoch_6.pth a0_int8.onnx --quantize int8 --calib-images 256

The batch dimension is dynamic unless ``--no-dynamic-batch``. A train-form checkpoint is
fused first (structural re-parameterization), with a notice.
"""
import argparse
import sys

from mmengine.config import DictAction

from mmrepvgg.utils import MissingExtraError
from mmrepvgg.apis.convert import ConfigError, build_train_model, load_repvgg_weights
from mmrepvgg.checkpoint import CheckpointError, check_output
from mmrepvgg.engine import load_repvgg_config
from mmrepvgg.model_zoo import checkpoint_file
from mmrepvgg.models import image_channels

try:
    from mmrepvgg.deploy.onnx_eval import preprocessed_batches
    from mmrepvgg.deploy.onnx_export import DEFAULT_OPSET, OnnxExportError, export_onnx
    from mmrepvgg.deploy.quantization import export_int8
    from mmrepvgg.dense.segmentation import export_segmentor_onnx
except MissingExtraError as missing:
    sys.exit(f'error: {missing}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the deploy form of a RepVGG model to ONNX and check it with '
        'onnx.checker and ONNX Runtime; optionally quantize it to static INT8.')
    parser.add_argument('config', help='train or deploy config of the model')
    parser.add_argument('checkpoint', help='train- or deploy-form checkpoint: file, URL or model zoo name (only read)')
    parser.add_argument('output', help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input image size (default: 224 224; with --quantize, the '
                        "size the config's test pipeline makes)")
    parser.add_argument('--batch-size', type=int, default=1,
                        help='batch size traced (default: 1); fixed in the file with '
                        '--no-dynamic-batch')
    parser.add_argument('--dynamic-batch', action=argparse.BooleanOptionalAction,
                        default=True, help='make the batch dimension symbolic (default: '
                        'yes; --no-dynamic-batch fixes it to --batch-size)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset version (default: {DEFAULT_OPSET})')
    parser.add_argument('--quantize', choices=('int8', ),
                        help='int8: static per-channel INT8 (QDQ) for ONNX Runtime, '
                        "calibrated on the config's training images")
    parser.add_argument('--calib-images', type=int, default=256,
                        help='training images to calibrate on (default: 256)')
    parser.add_argument('--check-images', type=int, default=512,
                        help='held-out test images on which INT8 and FP32 top-1 are '
                        'compared (default: 512)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. '
                        'train_dataloader.dataset.data_root=DIR')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUTPUT')
    args = parser.parse_args(argv)
    if args.shape and min(args.shape) < 32:
        parser.error(f'--shape {args.shape[0]} {args.shape[1]}: RepVGG downsamples 32x; '
                     'pass a height and width of at least 32')
    if min(args.batch_size, args.calib_images, args.check_images) < 1:
        parser.error('--batch-size, --calib-images and --check-images must be positive')
    if not 7 <= args.opset <= 20:
        parser.error(f'--opset {args.opset}: the exporter supports opsets 7 to 20; '
                     f'{DEFAULT_OPSET} is the default')
    if args.quantize and not args.dynamic_batch:
        parser.error('--quantize int8 writes a dynamic-batch file; drop --no-dynamic-batch')
    if args.quantize and args.opset < 13:
        parser.error(f'--opset {args.opset}: per-channel INT8 needs opset 13 or later')
    for role in ('checkpoint', 'config'):
        try:
            check_output(args.output, inputs=(getattr(args, role), ), overwrite=True)
        except CheckpointError:
            parser.error(f'OUTPUT {args.output} is the {role} it is made from; name a new '
                         '.onnx file (nothing was written)')
    return args


def print_progress(batch: int, batches: int, images: int) -> None:
    print(f'calibrating: batch {batch}/{batches} ({images} images)', flush=True)


def export_quantized(args: argparse.Namespace, cfg, model) -> int:
    calibration = [batch.images for batch in preprocessed_batches(
        cfg, 'train_dataloader', args.calib_images, shuffle=True,
        pipeline_from='test_dataloader')]
    size = calibration[0].shape[2:]
    if args.shape and tuple(args.shape) != size:
        raise ConfigError(f'--shape {args.shape[0]} {args.shape[1]}: the config\'s test '
                          f'pipeline makes {size[0]}x{size[1]} images; drop --shape or '
                          'change the pipeline')
    held_out = preprocessed_batches(cfg, 'test_dataloader', args.check_images,
                                    shuffle=False)
    report = export_int8(model, args.output, calibration, held_out, args.force,
                         print_progress, args.opset)
    agreement = report.agreement
    print(f'exported {report.path} (INT8 QDQ, per-channel weights, opset '
          f'{args.opset}, input (N, {calibration[0].shape[1]}, {size[0]}, {size[1]}); '
          f'calibrated on {report.calibration_images} training images)')
    print(f'FP32 export: max relative error ONNX Runtime vs PyTorch '
          f'{report.fp32_max_relative_error:.2e}')
    print(f'INT8 vs FP32 top-1 agreement on {agreement.num_images} held-out test images: '
          f'{100 * agreement.rate:.2f} % ({agreement.num_agree}/{agreement.num_images}); '
          f'top-1 FP32 {100 * agreement.reference_correct / agreement.num_images:.2f} %, '
          f'INT8 {100 * agreement.candidate_correct / agreement.num_images:.2f} %')
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_output(args.output, overwrite=args.force)  # before any work
        cfg = load_repvgg_config(args.config, args.cfg_options)
        if cfg.get('default_scope') == 'mmdet':
            raise ConfigError(f'{args.config}: a detector config; ONNX export covers '
                              'classifiers and mmseg segmentors (detection post-processing '
                              'does not export); convert it with '
                              'tools/reparameterize_repvgg.py instead')
        model = build_train_model(cfg)
        state, _ = load_repvgg_weights(model, checkpoint_file(args.checkpoint))
        if state.form == 'train':
            print(f'notice: {args.checkpoint} is in train form; fusing its blocks into the '
                  'deploy form before the export')
        if args.quantize:
            return export_quantized(args, cfg, model)
        input_shape = (args.batch_size, image_channels(model), *(args.shape or (224, 224)))
        if cfg.get('default_scope') == 'mmseg':  # a segmentor: logits at input size
            export = export_segmentor_onnx
        else:
            export = export_onnx
        report = export(model, args.output, input_shape, dynamic_batch=args.dynamic_batch,
                        opset=args.opset, overwrite=args.force)
    except (ConfigError, CheckpointError, OnnxExportError, FileExistsError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    batch = 'N' if report.dynamic_batch else report.input_shape[0]
    print(f'exported {report.path} (opset {report.opset}, input '
          f'({batch}, {", ".join(map(str, report.input_shape[1:]))}))')
    print(f'onnx.checker: passed; max relative error ONNX Runtime vs PyTorch: '
          f'{report.max_relative_error:.2e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

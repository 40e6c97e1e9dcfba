"""Export a RepVGG checkpoint to ONNX (deploy form), verified against ONNX Runtime.

    python tools/deployment/pytorch2onnx.py \
        configs/deploy/repvgg-A0_deploy_4xb64-coslr-120e_in1k.py A0.pth repvgg-A0.onnx \
        --shape 224 224 --dynamic-batch

A train-form checkpoint is fused first (structural re-parameterization), with a notice.
"""
import argparse
import sys

from mmrepvgg.analysis.onnx_export import DEFAULT_OPSET, OnnxExportError, export_onnx
from mmrepvgg.apis.convert import ConfigError, build_train_model, load_repvgg_weights
from mmrepvgg.checkpoint import CheckpointError
from mmrepvgg.models import image_channels


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the deploy form of a RepVGG model to ONNX and check it with '
        'onnx.checker and ONNX Runtime.')
    parser.add_argument('config', help='train or deploy config of the model')
    parser.add_argument('checkpoint', help='train- or deploy-form checkpoint (only read)')
    parser.add_argument('output', help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'), help='input image size (default: 224 224)')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='batch size traced (default: 1)')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='make the batch dimension symbolic')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset version (default: {DEFAULT_OPSET})')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUTPUT')
    args = parser.parse_args(argv)
    if min(args.shape) < 32:
        parser.error(f'--shape {args.shape[0]} {args.shape[1]}: RepVGG downsamples 32x; '
                     'pass a height and width of at least 32')
    if args.batch_size < 1:
        parser.error(f'--batch-size {args.batch_size}: pass a positive batch size')
    if not 7 <= args.opset <= 20:
        parser.error(f'--opset {args.opset}: the exporter supports opsets 7 to 20; '
                     f'{DEFAULT_OPSET} is the default')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model = build_train_model(args.config)
        state, _ = load_repvgg_weights(model, args.checkpoint)
        if state.form == 'train':
            print(f'notice: {args.checkpoint} is in train form; fusing its blocks into the '
                  'deploy form before the export')
        input_shape = (args.batch_size, image_channels(model), *args.shape)
        report = export_onnx(model, args.output, input_shape,
                             dynamic_batch=args.dynamic_batch, opset=args.opset,
                             overwrite=args.force)
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

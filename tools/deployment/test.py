"""Evaluate an exported model (FP32 or INT8; ONNX, or an OpenVINO IR ``.xml``) as
tools/test.py evaluates a checkpoint: the config's test dataloader, preprocessing and
evaluator, the model run by ONNX Runtime or OpenVINO on the CPU. With ``--backend
torch-int8`` the model is a checkpoint, quantized inside PyTorch (PT2E, the
``[torch-int8]`` extra) on the config's training images, then evaluated the same way.

    python tools/deployment/test.py configs/digits/repvgg-A0_digits.py a0_int8.onnx
    python tools/deployment/test.py configs/digits/repvgg-A0_digits.py a0_int8.xml
    python tools/deployment/test.py configs/mmseg/digits/fcn_repvgg-A0-d8_digits.py \
        fcn_int8.onnx   # a segmentor: the config's IoUMetric (mIoU)
    python tools/deployment/test.py configs/digits/repvgg-A0_digits.py epoch_6.pth \
        --backend torch-int8

It names the CPU (INT8 results depend on it). The last line printed is
``test metrics: {json}``, as tools/test.py prints it.
"""
import argparse
import sys

import torch

from mmrepvgg._utils import MAX_DATASET_IMAGES, MAX_THREADS, MissingExtraError, int_in
from mmrepvgg.apis import prepare_for_inference
from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint
from mmrepvgg.checkpoint.fitting import checkpoint_file
from mmrepvgg.engine import ConfigError, load_repvgg_config
from mmrepvgg.engine._config import KeyValueAction
from mmrepvgg.engine.runner import build_runner, format_test_metrics, prepare_test_config

try:
    from mmrepvgg.deploy._host_cpu import INT8_KERNELS, host_cpu
    from mmrepvgg.deploy._onnx_eval import (exported_model_test_config, preprocessed_batches,
                                            runtime_classifier)
    from mmrepvgg.deploy.torch_int8 import TorchInt8Error
except MissingExtraError as missing:
    sys.exit(f'error: {missing}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test an ONNX model exported by '
                                     'tools/deployment/pytorch2onnx.py with ONNX Runtime')
    parser.add_argument('config', help='the config the model was exported from (its test '
                        'dataloader, preprocessing and evaluator are used)')
    parser.add_argument('model', help='.onnx file or OpenVINO .xml IR, FP32 or INT8; with '
                        '--backend torch-int8, a checkpoint of the config (file, URL or '
                        'model zoo name)')
    parser.add_argument('--backend', choices=('exported', 'torch-int8'), default='exported',
                        help='exported: MODEL is a file run by ONNX Runtime (.onnx) or '
                        'OpenVINO (.xml) (default); torch-int8: MODEL is a checkpoint, '
                        'quantized inside PyTorch (PT2E, [torch-int8] extra) on '
                        "--calib-images of the config's training images")
    parser.add_argument('--calib-images', type=int_in(1, MAX_DATASET_IMAGES), default=256,
                        help='with --backend torch-int8: training images to calibrate on '
                        '(default: 256)')
    parser.add_argument('--work-dir', help='folder for the test log '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump every prediction into this new .pkl file')
    parser.add_argument('--threads', type=int_in(1, MAX_THREADS),
                        help="runtime threads (default: the runtime's)")
    parser.add_argument('--int8-kernels', choices=('auto', *INT8_KERNELS), default='auto',
                        help='ONNX Runtime x64 INT8 kernels (default: auto, u8u8 on x86 '
                        'CPUs without VNNI, else u8s8)')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        metavar='KEY=VALUE',
                        help='override config entries, e.g. test_dataloader.batch_size=16')
    args = parser.parse_args(argv)
    if args.backend == 'torch-int8' and args.int8_kernels != 'auto':
        parser.error('--int8-kernels chooses ONNX Runtime kernels; drop it for --backend '
                     'torch-int8')
    return args


def torch_int8_runner(args: argparse.Namespace, cfg):
    """The Runner of ``cfg`` whose model is the checkpoint quantized by PT2E on the
    config's training images (through its test pipeline: no augmentation)."""
    model = build_train_model(cfg)
    load_checkpoint(model, args.model, 'convert')
    calibration = [torch.from_numpy(batch.images) for batch in preprocessed_batches(
        cfg, 'train_dataloader', args.calib_images, shuffle=True,
        pipeline_from='test_dataloader')]
    int8_model = prepare_for_inference(model, backend='torch-int8',
                                       calibration_images=calibration)
    for notice in int8_model.notices:
        print(f'notice: {notice}')
    prepare_test_config(cfg, args.config, checkpoint_file(args.model), args.work_dir,
                        args.out)
    cfg.load_from = None  # the quantized model is built, not loaded
    runner = build_runner(cfg)
    runner.model = runtime_classifier(cfg, int8_model, args.model)
    images = sum(len(batch) for batch in calibration)
    return runner, f'PyTorch INT8 (PT2E, x86 Inductor quantizer, {images} calibration images)'


def exported_model_runner(args: argparse.Namespace, cfg):
    """The Runner of ``cfg`` whose model is the exported file."""
    if cfg.get('default_scope') == 'mmdet':
        raise ConfigError(f'{args.config}: a detector config; exported detectors are not '
                          'built (pytorch2onnx.py exports classifiers and mmseg segmentors); '
                          "test the checkpoint with mmdet's tools/test.py instead")
    # The model file is checked first (ONNX Runtime opens it), then the test data.
    exported_model_test_config(cfg, args.model, args.threads, args.int8_kernels)
    prepare_test_config(cfg, args.config, args.model, args.work_dir, args.out)
    cfg.load_from = None  # the ONNX file is the model, not weights to load into it
    runner = build_runner(cfg)
    input_size = runner.model.runtime.input_size  # None: any size
    if runner.model.resize_to_file and input_size is not None:
        print(f"notice: the config's test pipeline keeps each image's size and {args.model} "
              f'takes {input_size[0]}x{input_size[1]} images: an image of another size is '
              "resized to it, and its logits back to the image's size")
    runtime = ('OpenVINO' if args.model.endswith('.xml') else 'ONNX Runtime, INT8 kernels '
               + runner.model.runtime.kernel_choice.kernels)
    return runner, runtime


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_repvgg_config(args.config, args.cfg_options)
        if args.backend == 'torch-int8':
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            runner, runtime = torch_int8_runner(args, cfg)
        else:
            runner, runtime = exported_model_runner(args, cfg)
        metrics = runner.test()
    except (ConfigError, CheckpointError, MissingExtraError, TorchInt8Error) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except FileNotFoundError as error:  # the dataset is built lazily, inside test()
        print(f'error: {args.config}: cannot read its test data ({error}); check data_root '
              'or prepare the data first (the digits demo: python tools/demo.py)',
              file=sys.stderr)
        return 1
    print(f'CPU: {host_cpu(args.threads).describe()}; {runtime}')
    print(format_test_metrics(metrics))
    return 0


if __name__ == '__main__':
    sys.exit(main())

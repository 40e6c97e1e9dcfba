"""Evaluate an exported ONNX model (FP32 or INT8) as tools/test.py evaluates a checkpoint:
the config's test dataloader, preprocessing and evaluator, the model run by ONNX Runtime.

    python tools/deployment/test.py configs/digits/repvgg-A0_digits.py a0_int8.onnx

The last line printed is ``test metrics: {json}``, as tools/test.py prints it.
"""
import argparse
import sys

from mmengine.config import DictAction

from mmrepvgg.utils import MissingExtraError
from mmrepvgg.engine import (ConfigError, build_runner, format_test_metrics,
                             load_repvgg_config, prepare_test_config)

try:
    from mmrepvgg.deploy.onnx_eval import onnx_test_config
except MissingExtraError as missing:
    sys.exit(f'error: {missing}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test an ONNX model exported by '
                                     'tools/deployment/pytorch2onnx.py with ONNX Runtime')
    parser.add_argument('config', help='the config the model was exported from (its test '
                        'dataloader, preprocessing and evaluator are used)')
    parser.add_argument('model', help='.onnx file, FP32 or INT8')
    parser.add_argument('--work-dir', help='folder for the test log '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump every prediction into this new .pkl file')
    parser.add_argument('--threads', type=int,
                        help="ONNX Runtime intra-op threads (default: ONNX Runtime's)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. test_dataloader.batch_size=16')
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads {args.threads}: pass a positive number of threads')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_repvgg_config(args.config, args.cfg_options)
        # The model file is checked first (ONNX Runtime opens it), then the test data.
        onnx_test_config(cfg, args.model, args.threads)
        prepare_test_config(cfg, args.config, args.model, args.work_dir, args.out)
        cfg.load_from = None  # the ONNX file is the model, not weights to load into it
        runner = build_runner(cfg)
        metrics = runner.test()
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except FileNotFoundError as error:  # the dataset is built lazily, inside test()
        print(f'error: {args.config}: cannot read its test data ({error}); check data_root '
              'or prepare the data first (the digits demo: python tools/demo.py)',
              file=sys.stderr)
        return 1
    print(format_test_metrics(metrics))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Evaluate an exported model (FP32 or INT8; ONNX, or an OpenVINO IR ``.xml``) as
tools/test.py evaluates a checkpoint: the config's test dataloader, preprocessing and
evaluator, the model run by ONNX Runtime or OpenVINO on the CPU.

    python tools/deployment/test.py configs/digits/repvgg-A0_digits.py a0_int8.onnx
    python tools/deployment/test.py configs/digits/repvgg-A0_digits.py a0_int8.xml

It names the CPU (INT8 results depend on it). The last line printed is
``test metrics: {json}``, as tools/test.py prints it.
"""
import argparse
import sys

from mmengine.config import DictAction

from mmrepvgg._utils import MissingExtraError
from mmrepvgg.engine import ConfigError, load_repvgg_config
from mmrepvgg.engine.runner import build_runner, format_test_metrics, prepare_test_config

try:
    from mmrepvgg.deploy._host_cpu import INT8_KERNELS, host_cpu
    from mmrepvgg.deploy._onnx_eval import exported_model_test_config
except MissingExtraError as missing:
    sys.exit(f'error: {missing}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test an ONNX model exported by '
                                     'tools/deployment/pytorch2onnx.py with ONNX Runtime')
    parser.add_argument('config', help='the config the model was exported from (its test '
                        'dataloader, preprocessing and evaluator are used)')
    parser.add_argument('model', help='.onnx file or OpenVINO .xml IR, FP32 or INT8')
    parser.add_argument('--work-dir', help='folder for the test log '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump every prediction into this new .pkl file')
    parser.add_argument('--threads', type=int,
                        help="runtime threads (default: the runtime's)")
    parser.add_argument('--int8-kernels', choices=('auto', *INT8_KERNELS), default='auto',
                        help='ONNX Runtime x64 INT8 kernels (default: auto, u8u8 on x86 '
                        'CPUs without VNNI, else u8s8)')
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
        exported_model_test_config(cfg, args.model, args.threads, args.int8_kernels)
        prepare_test_config(cfg, args.config, args.model, args.work_dir, args.out)
        cfg.load_from = None  # the ONNX file is the model, not weights to load into it
        runner = build_runner(cfg)
        metrics = runner.test()
    except (ConfigError, MissingExtraError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except FileNotFoundError as error:  # the dataset is built lazily, inside test()
        print(f'error: {args.config}: cannot read its test data ({error}); check data_root '
              'or prepare the data first (the digits demo: python tools/demo.py)',
              file=sys.stderr)
        return 1
    runtime = ('OpenVINO' if args.model.endswith('.xml') else 'ONNX Runtime, INT8 kernels '
               + runner.model.runtime.kernel_choice.kernels)
    print(f'CPU: {host_cpu(args.threads).describe()}; {runtime}')
    print(format_test_metrics(metrics))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Parameters and FLOPs of the model a config builds (train or deploy form).

    python tools/analysis_tools/get_flops.py configs/repvgg-A0_4xb64-coslr-120e_in1k.py
    python tools/analysis_tools/get_flops.py \
        configs/deploy/repvgg-A0_deploy_4xb64-coslr-120e_in1k.py --shape 256 256

Counted by mmengine's FlopAnalyzer; see mmrepvgg.analysis.complexity for the two FLOP
conventions printed (the published table's and mmengine's default).
"""
import argparse
import sys

from mmrepvgg._utils import input_shape_problem
from mmrepvgg.analysis import count_complexity
from mmrepvgg.engine._config import ConfigError, load_repvgg_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Count the parameters and FLOPs '
                                     '(multiply-adds) of the model a config builds.')
    parser.add_argument('config', help='train or deploy config file')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'), help='input image size (default: 224 224)')
    args = parser.parse_args(argv)
    if input_shape_problem('--shape', *args.shape):
        parser.error(input_shape_problem('--shape', *args.shape))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_repvgg_config(args.config)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    form = 'deploy' if cfg.model.backbone.get('deploy', False) else 'train'
    complexity = count_complexity(cfg, tuple(args.shape))
    height, width = complexity.input_size
    print(f'Model: {args.config} (RepVGG {cfg.model.backbone.arch}, {form} form)')
    print(f'Input shape: (1, 3, {height}, {width})')
    print(f'Params: {complexity.params / 1e6:.2f} M ({complexity.params})')
    print(f'FLOPs: {complexity.gmacs:.2f} G ({complexity.macs}; multiply-adds, '
          'convention of the published table: conv + bias adds + BN + ReLU + pooling)')
    print(f'FLOPs (mmengine default, as mmpretrain 1.x get_flops.py): '
          f'{complexity.macs_mmengine / 1e9:.2f} G ({complexity.macs_mmengine})')
    return 0


if __name__ == '__main__':
    sys.exit(main())

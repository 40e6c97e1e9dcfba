"""Convert a train-form RepVGG checkpoint (mmrepvgg / mmpretrain / mmcls, official or timm
layout) into a verified deploy-form checkpoint.

    python tools/reparameterize_repvgg.py CONFIG SRC DST [--force] [--src-format timm]
    python tools/test.py DEPLOY_CONFIG DST

``--dst-format official`` writes the official repository's deploy layout instead
(``stage0.rbr_reparam.weight``, ``linear.weight``) for users of other runtimes.
"""
import argparse
import sys

from mmrepvgg.apis import ConfigError, convert_checkpoint
from mmrepvgg.checkpoint import CheckpointError
from mmrepvgg.checkpoint._layouts import LAYOUTS
from mmrepvgg.checkpoint.fitting import checkpoint_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Fuse every RepVGG block of a checkpoint into one 3x3 conv '
        '(structural re-parameterization) and save the deploy checkpoint.')
    parser.add_argument('config', help='train or deploy config of the model')
    parser.add_argument('src', help='train-form checkpoint to convert: file, URL or model zoo '
                        'name (only read)')
    parser.add_argument('dst', help='deploy checkpoint to write')
    parser.add_argument('--src-format', choices=sorted(LAYOUTS),
                        help='key layout of SRC (default: detected from its keys)')
    parser.add_argument('--dst-format', choices=('mmrepvgg', 'official'),
                        default='mmrepvgg',
                        help="'mmrepvgg' (default; for tools/test.py) or 'official' "
                        '(bare state dict in the official RepVGG deploy layout)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing DST')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = convert_checkpoint(args.config, checkpoint_file(args.src), args.dst,
                                    src_format=args.src_format, dst_format=args.dst_format,
                                    overwrite=args.force)
    except (CheckpointError, ConfigError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'error: interrupted; {args.dst} was not written', file=sys.stderr)
        return 130
    for notice in report.notices:
        print(f'notice: {notice}')
    if report.max_relative_error is None:
        error_text = 'n/a (already deploy form)'
    else:
        error_text = (f'{report.max_relative_error:.2e} in float64 (verified), '
                      f'{report.max_relative_error_float32:.2e} in float32')
    print(f'{report.arch} ({report.src_layout} layout, {report.src_form} form): fused '
          f'{report.num_fused_blocks} blocks; max relative error train vs deploy: '
          f'{error_text}')
    print(f'saved {args.dst_format} deploy checkpoint to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

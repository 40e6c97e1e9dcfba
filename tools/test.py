"""Evaluate a RepVGG checkpoint with its config (an mmengine Runner shell).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out PREDICTIONS.pkl]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm}]

A re-parameterized checkpoint (tools/reparameterize_repvgg.py) goes with the deploy config
(configs/deploy/...). The last line printed is ``test metrics: {json}``.
"""
import argparse
import sys

from mmrepvgg.checkpoint import CheckpointError
from mmrepvgg.engine import ConfigError, run_test
from mmrepvgg.engine._config import KeyValueAction
from mmrepvgg.engine.runner import LAUNCHERS, format_test_metrics


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a RepVGG checkpoint')
    parser.add_argument('config', help='config of the checkpoint\'s form (train or deploy)')
    parser.add_argument('checkpoint', help='checkpoint file, URL or model zoo name')
    parser.add_argument('--work-dir', help='folder for the test log '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump every prediction into this new .pkl file')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        metavar='KEY=VALUE',
                        help='override config entries, e.g. test_dataloader.batch_size=16')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (set by dist_test.sh / slurm_test.sh)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        metrics = run_test(args.config, args.checkpoint, args.work_dir, args.cfg_options,
                           args.out, args.launcher)
    except (ConfigError, CheckpointError, FileExistsError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('error: interrupted' + (f'; {args.out} was not written' if args.out else ''),
              file=sys.stderr)
        return 130
    print(format_test_metrics(metrics))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Evaluate a RepVGG checkpoint with its config (an mmengine Runner shell).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out PREDICTIONS.pkl]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm}]

A re-parameterized checkpoint (tools/reparameterize_repvgg.py) goes with the deploy config
(configs/deploy/...). The last line printed is ``test metrics: {json}``.
"""
import argparse
import contextlib
import sys

from mmengine.config import DictAction

from mmrepvgg.checkpoint import CheckpointError, atomic_output
from mmrepvgg.model_zoo import checkpoint_file
from mmrepvgg.engine import (LAUNCHERS, ConfigError, build_runner, format_test_metrics,
                             load_repvgg_config, prepare_test_config)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a RepVGG checkpoint')
    parser.add_argument('config', help='config of the checkpoint\'s form (train or deploy)')
    parser.add_argument('checkpoint', help='checkpoint file, URL or model zoo name')
    parser.add_argument('--work-dir', help='folder for the test log '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump every prediction into this new .pkl file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. test_dataloader.batch_size=16')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (set by dist_test.sh / slurm_test.sh)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_repvgg_config(args.config, args.cfg_options)
        checkpoint = checkpoint_file(args.checkpoint)
        prepare_test_config(cfg, args.config, checkpoint, args.work_dir, args.out,
                            args.launcher)
        with contextlib.ExitStack() as outputs:
            if args.out:  # the dump lands in a partial file, published when complete
                cfg.test_evaluator[-1]['out_file_path'] = outputs.enter_context(atomic_output(
                    args.out, inputs=(args.config, checkpoint), suffix='.pkl'))
            # The Runner loads the checkpoint safely and refuses one that does not fit the
            # model exactly (mmrepvgg.engine.RepVGGRunner), before any image is evaluated.
            metrics = build_runner(cfg).test()
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

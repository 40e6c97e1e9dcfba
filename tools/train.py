"""Train a RepVGG classifier from an mmengine config (an mmengine Runner shell).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm}]

Multi-process: bash tools/dist_train.sh CONFIG NUM_PROCESSES [options].

Fine-tuning: ``--cfg-options load_from=CKPT`` loads CKPT's RepVGG backbone, which must fit
the config exactly; the other tensors that do not fit (an ImageNet head) keep their
initialisation and are listed in one ``notice:`` line. ``--resume CKPT`` needs a checkpoint
saved by a training run (``meta.epoch``, ``meta.iter``).

On a CPU, set ``OMP_NUM_THREADS`` (1 on a small or busy machine): the tool says so when
it is unset, since torch then starts one thread per core, and threads waiting for a core
that other work holds can slow training many times over (measured: docs/training_threads.md).
"""
import argparse
import os
import sys
from typing import Optional

import torch

from mmrepvgg.checkpoint import CheckpointError
from mmrepvgg.engine import ConfigError, run_train
from mmrepvgg.engine._config import KeyValueAction
from mmrepvgg.engine.runner import LAUNCHERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a RepVGG model')
    parser.add_argument('config', help='train config, e.g. configs/digits/repvgg-A0_digits.py')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CKPT',
                        help='resume from CKPT, or without CKPT from the latest checkpoint '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training (GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr to the actual total batch size')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        metavar='KEY=VALUE',
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (set by dist_train.sh / slurm_train.sh)')
    return parser.parse_args(argv)


def thread_notice() -> Optional[str]:
    """The line to print when a CPU training would run with torch's default threads."""
    if 'OMP_NUM_THREADS' in os.environ or torch.cuda.is_available():
        return None
    return (f'notice: OMP_NUM_THREADS is not set, so torch trains with '
            f'{torch.get_num_threads()} threads on the CPU; on a small or busy machine set '
            'OMP_NUM_THREADS=1 (as tools/demo.py does), e.g. OMP_NUM_THREADS=1 python '
            'tools/train.py ...')


def main(argv=None) -> int:
    args = parse_args(argv)
    notice = thread_notice()
    if notice:
        print(notice, flush=True)
    try:
        run_train(args.config, args.work_dir, args.cfg_options, args.resume, args.amp,
                  args.auto_scale_lr, args.launcher)
    except (ConfigError, CheckpointError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

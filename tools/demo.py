"""The embedded default, end to end on scikit-learn's digits (no download, no GPU):

    prepare data/digits (one folder per class) -> tools/train.py -> tools/test.py (train checkpoint)
    -> tools/reparameterize_repvgg.py -> tools/test.py (deploy checkpoint, deploy config)

then prints both top-1 accuracies (they must agree), the deploy-vs-train inference speed-up
measured on the same weights and batch, and each step's wall time. Each step runs in this
process through the function its tool calls (the metrics are what ``Runner.test()``
returns); the equivalent command is printed before it.
"""
import argparse
import os
import sys
import time

# Small 32x32 convolutions gain little from intra-op threads, and on a busy machine idle
# OpenMP threads spinning for a core slowed training about 10x (measured on 2 shared cores).
os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

from mmrepvgg.analysis._timing import time_interleaved  # noqa: E402
from mmrepvgg.apis import ConfigError, convert_checkpoint, get_model  # noqa: E402
from mmrepvgg.checkpoint import CheckpointError  # noqa: E402
from mmrepvgg.datasets import prepare_digits  # noqa: E402
from mmrepvgg.engine import run_test, run_train  # noqa: E402
from mmrepvgg._utils import MAX_BATCH_IMAGES, MissingExtraError, int_in  # noqa: E402

TRAIN_CONFIG = 'configs/digits/repvgg-A0_digits.py'
DEPLOY_CONFIG = 'configs/digits/deploy/repvgg-A0_deploy_digits.py'
DATA_ROOT = 'data/digits'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/digits_demo',
                        help='folder for logs and checkpoints (default: %(default)s)')
    parser.add_argument('--benchmark-batch', type=int_in(1, MAX_BATCH_IMAGES),
                        default=64,
                        help='images per forward in the speed comparison (default: 64)')
    args = parser.parse_args(argv)
    if os.path.exists(args.work_dir) and not os.path.isdir(args.work_dir):
        parser.error(f'--work-dir {args.work_dir}: is a file, not a folder; pass a folder '
                     'for the logs and checkpoints')
    return args


def run_step(title: str, command: str, function, *function_args):
    """Run one step in this process, after printing the tool command that does the same;
    a bad input ends the demo with its one ``error:`` line."""
    print(f'\n=== {title}\n$ python {command}', flush=True)
    try:
        return function(*function_args)
    except (ConfigError, CheckpointError) as error:
        sys.exit(f'error: step "{title}" failed: {error}')


def main(argv=None):
    args = parse_args(argv)
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    step_seconds = {}

    def timed(title, function, *function_args):
        start = time.perf_counter()
        result = function(*function_args)
        step_seconds[title] = time.perf_counter() - start
        return result

    print(f'=== prepare data: scikit-learn digits -> {DATA_ROOT}', flush=True)
    try:
        split = timed('prepare data', prepare_digits, DATA_ROOT)
    except (MissingExtraError, FileExistsError) as error:
        sys.exit(f'error: {error}')
    print(f'{"wrote" if split.created else "found"} {split.num_train} train and '
          f'{split.num_val} val images in {split.data_root}')

    timed('train', run_step, 'train RepVGG-A0 (train form)',
          f'tools/train.py {TRAIN_CONFIG} --work-dir {args.work_dir}',
          run_train, TRAIN_CONFIG, args.work_dir)
    with open(os.path.join(args.work_dir, 'last_checkpoint')) as stream:
        train_checkpoint = stream.read().strip()
    deploy_checkpoint = os.path.splitext(train_checkpoint)[0] + '_deploy.pth'

    train_metrics = timed('test train form', run_step, 'test the train-form checkpoint',
                          f'tools/test.py {TRAIN_CONFIG} {train_checkpoint} '
                          f'--work-dir {args.work_dir}',
                          run_test, TRAIN_CONFIG, train_checkpoint, args.work_dir)
    # --force: the deploy file is this demo's own output, re-derived on every run.
    report = timed('re-parameterize', run_step, 're-parameterize to the deploy form',
                   f'tools/reparameterize_repvgg.py {TRAIN_CONFIG} {train_checkpoint} '
                   f'{deploy_checkpoint} --force',
                   convert_checkpoint, TRAIN_CONFIG, train_checkpoint, deploy_checkpoint,
                   None, 'mmrepvgg', True)
    print(f'fused {report.num_fused_blocks} blocks; max relative error train vs deploy: '
          f'{report.max_relative_error:.2e} in float64 (verified)')
    deploy_metrics = timed('test deploy form', run_step, 'test the deploy checkpoint',
                           f'tools/test.py {DEPLOY_CONFIG} {deploy_checkpoint} '
                           f'--work-dir {args.work_dir}',
                           run_test, DEPLOY_CONFIG, deploy_checkpoint, args.work_dir)

    print('\n=== inference speed, same weights and batch', flush=True)
    train_model = get_model(TRAIN_CONFIG, pretrained=train_checkpoint, device='cpu')
    deploy_model = get_model(DEPLOY_CONFIG, pretrained=deploy_checkpoint, device='cpu')
    images = torch.randn(args.benchmark_batch, 3, 32, 32,
                         generator=torch.Generator().manual_seed(0))
    # Round-robin rounds expose both forms to the same background load; medians of 10.
    with torch.inference_mode():
        speed = timed('speed comparison', time_interleaved,
                      dict(train=lambda: train_model(images, mode='tensor'),
                           deploy=lambda: deploy_model(images, mode='tensor')),
                      args.benchmark_batch, 2, 10)
    train_speed, deploy_speed = speed['train'].images_per_s, speed['deploy'].images_per_s

    train_top1 = train_metrics['accuracy/top1']
    deploy_top1 = deploy_metrics['accuracy/top1']
    print('\n=== summary (RepVGG-A0, digits val, 360 images)')
    print(f'top-1 train form:  {train_top1:.2f} %')
    print(f'top-1 deploy form: {deploy_top1:.2f} %  '
          f'({"agrees" if train_top1 == deploy_top1 else "DIFFERS"})')
    print(f'inference, batch {tuple(images.shape)}, {torch.get_num_threads()} thread(s), '
          f'median of 10: train {train_speed:.0f} images/s, deploy {deploy_speed:.0f} '
          f'images/s, speed-up {deploy_speed / train_speed:.2f}x')
    for title, seconds in step_seconds.items():
        print(f'  {title:<18} {seconds:7.1f} s')
    print(f'  {"total":<18} {sum(step_seconds.values()):7.1f} s')
    if train_top1 != deploy_top1:
        sys.exit('error: the deploy form does not reproduce the train form\'s accuracy')


if __name__ == '__main__':
    main()

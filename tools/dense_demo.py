"""The offline dense-prediction example on handwritten digits pasted onto 64x64 canvases
(no download, no GPU): for a RepVGG-A0 FCN segmentor and a RepVGG-A0 FCOS detector,

    prepare data/digit_canvases -> train (the config's runner_type, as mmseg's tools/train.py)
    -> test (mIoU / COCO mAP) -> tools/reparameterize_repvgg.py's conversion
    -> test the deploy checkpoint with the deploy config (mmengine's Runner, as mmseg's
       tools/test.py)

then prints train and deploy metrics side by side (they must agree) with the deploy/train
inference speed ratio measured on the same weights and batch. See docs/dense_prediction.md.
"""
import argparse
import os
import sys
import time

# Small convolutions gain little from intra-op threads; idle OpenMP threads spinning for a
# busy core slow training on a shared machine (see tools/demo.py).
os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmrepvgg.analysis._timing import time_interleaved  # noqa: E402
from mmrepvgg.apis import convert_checkpoint  # noqa: E402
from mmrepvgg.datasets import prepare_digit_canvases  # noqa: E402
from mmrepvgg.engine.runner import build_runner  # noqa: E402
from mmrepvgg._utils import (MAX_BATCH_IMAGES, MAX_DATASET_IMAGES,  # noqa: E402
                             MissingExtraError, int_in)

TASKS = {  # name: (train config, deploy config, metric key, shown as, in % per unit)
    'segmentation': ('configs/mmseg/digits/fcn_repvgg-A0-d8_digits.py',
                     'configs/mmseg/digits/deploy/fcn_repvgg-A0-d8_deploy_digits.py',
                     'mIoU', 'mIoU (%)', 1),  # mmseg reports percent
    'detection': ('configs/mmdet/digits/fcos_repvgg-A0_fpn_digits.py',
                  'configs/mmdet/digits/deploy/fcos_repvgg-A0_deploy_fpn_digits.py',
                  'coco/bbox_mAP', 'mAP (%)', 100),  # COCO mAP over IoU 0.5:0.95, in 0-1
}
DATA_ROOT = 'data/digit_canvases'
# Beyond these a demo run would take days.
MAX_SEG_ITERS, MAX_DET_EPOCHS = 10**6, 10**4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/dense_demo',
                        help='folder for logs and checkpoints (default: %(default)s)')
    parser.add_argument('--data-root', default=DATA_ROOT,
                        help='canvases folder, written once (default: %(default)s)')
    parser.add_argument('--num-train', type=int_in(1, MAX_DATASET_IMAGES), default=800,
                        help='train canvases')
    parser.add_argument('--num-val', type=int_in(1, MAX_DATASET_IMAGES), default=200,
                        help='val canvases')
    parser.add_argument('--seg-iters', type=int_in(1, MAX_SEG_ITERS),
                        help="segmentor iterations (default: the config's)")
    parser.add_argument('--det-epochs', type=int_in(1, MAX_DET_EPOCHS),
                        help="detector epochs (default: the config's)")
    parser.add_argument('--benchmark-batch', type=int_in(1, MAX_BATCH_IMAGES), default=16,
                        help='images per forward in the speed comparison (default: 16)')
    return parser.parse_args(argv)


def task_config(path: str, work_dir: str, args, schedule: dict) -> Config:
    cfg = Config.fromfile(path)
    data_root = args.data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    if cfg.get('test_evaluator', {}).get('ann_file'):  # COCO metrics read the val boxes
        cfg.test_evaluator.ann_file = cfg.val_evaluator.ann_file = \
            data_root + 'annotations/val.json'
    cfg.merge_from_dict(schedule)
    cfg.work_dir = work_dir
    return cfg


def schedule_options(task: str, args) -> dict:
    if task == 'segmentation' and args.seg_iters:
        iters = args.seg_iters
        return {'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
                'param_scheduler': [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0,
                                         end=iters, by_epoch=False)],
                'default_hooks.checkpoint.interval': iters}
    if task == 'detection' and args.det_epochs:
        epochs = args.det_epochs
        return {'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
                'param_scheduler': [dict(type='CosineAnnealingLR', T_max=epochs,
                                         by_epoch=True, begin=0, end=epochs)],
                'default_hooks.checkpoint.interval': epochs}
    return {}


def speed_ratio(train_model, deploy_model, batch_size: int) -> float:
    """Deploy over train images per second, on one batch of 64x64 canvases."""
    images = torch.randn(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        timings = time_interleaved({
            'train': lambda: train_model(images, mode='tensor'),
            'deploy': lambda: deploy_model(images, mode='tensor')}, batch_size, rounds=7)
    return timings['deploy'].images_per_s / timings['train'].images_per_s


def run_task(task: str, args) -> dict:
    train_config, deploy_config, metric_key, _, percent = TASKS[task]
    work_dir = os.path.join(args.work_dir, task)
    schedule = schedule_options(task, args)
    start = time.perf_counter()
    runner = build_runner(task_config(train_config, work_dir, args, schedule))
    runner.train()
    train_metrics = runner.test()
    with open(os.path.join(work_dir, 'last_checkpoint')) as stream:
        checkpoint = stream.read().strip()
    deploy_checkpoint = os.path.join(work_dir, 'deploy.pth')
    report = convert_checkpoint(train_config, checkpoint, deploy_checkpoint, overwrite=True)
    print(f'{task}: fused {report.num_fused_blocks} blocks; max relative error train vs '
          f'deploy {report.max_relative_error:.2e} in float64 (verified), '
          f'{report.max_relative_error_float32:.2e} in float32', flush=True)
    deploy_cfg = task_config(deploy_config, os.path.join(work_dir, 'deploy'), args, schedule)
    deploy_cfg.load_from = deploy_checkpoint
    deploy_runner = Runner.from_cfg(deploy_cfg)
    deploy_metrics = deploy_runner.test()
    return dict(train=percent * train_metrics[metric_key],
                deploy=percent * deploy_metrics[metric_key],
                speed_ratio=speed_ratio(runner.model, deploy_runner.model,
                                        args.benchmark_batch),
                seconds=time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        canvases = prepare_digit_canvases(args.data_root, args.num_train, args.num_val)
    except (MissingExtraError, FileExistsError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(f'{canvases.data_root}: {canvases.num_train} train / {canvases.num_val} val '
          f'canvases ({"written" if canvases.created else "already there"})', flush=True)
    results = {task: run_task(task, args) for task in TASKS}
    print(f'\n{"task":<14}{"metric":<11}{"train form":>12}{"deploy form":>13}'
          f'{"deploy/train speed":>20}{"wall time":>11}')
    for task, result in results.items():
        print(f'{task:<14}{TASKS[task][3]:<11}{result["train"]:>12.2f}'
              f'{result["deploy"]:>13.2f}{result["speed_ratio"]:>19.2f}x'
              f'{result["seconds"]:>10.0f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())

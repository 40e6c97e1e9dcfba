"""Inference (or, with --train, training) speed of a RepVGG config next to mmpretrain's
RepVGG with the same weights and torchvision ResNets; tables in Markdown, all figures in
JSON.

    python benchmarks/benchmark.py configs/repvgg-A0_4xb64-coslr-120e_in1k.py \
        --batch-sizes 1 16 --variants all --json benchmark.json
    python benchmarks/benchmark.py configs/repvgg-A0_4xb64-coslr-120e_in1k.py \
        --train --json training.json
    python benchmarks/benchmark.py CFG --quick --json quick.json  # seconds

Without --checkpoint the weights are random with trained-looking BN statistics (speed
does not depend on the values; the fusion is then not trivial).
"""
import argparse
import json
import sys
from typing import List

import torch

from lab.benchmark import (BenchmarkSettings, arch_name, run_inference_benchmark,
                           run_training_benchmark)
from lab.report import format_report, markdown_table
from lab.rows import COMPILED, DEPLOY, INT8_ONNXRUNTIME, INT8_OPENVINO, ONNXRUNTIME, RECOMMENDED
from mmrepvgg.apis.convert import ConfigError, build_train_model
from mmrepvgg.checkpoint import CheckpointError, atomic_output, check_output, load_checkpoint
from mmrepvgg.models import ARCH_SETTINGS
from lab.synthetic import randomize_batch_norms_


# The acceptance targets of the performance issue, checked on every run's figures (the
# library only measures; what counts as good enough is this tool's business).
ONNX_TARGET = 1e-4
INT8_TARGET_VNNI, INT8_TARGET_AVX2 = 3.0, 1.8  # x ONNX Runtime FP32, A0 batch 16


def _rows(results: dict, path: str, **match) -> List[dict]:
    return [row for row in results.get('inference', []) if row['path'] == path and all(
        row.get(key) == value for key, value in match.items())]


def check_targets(results: dict, arch: str) -> List[dict]:
    """Each target of the performance issue with the measured figure and whether it is
    met; targets the run has no data for are left out."""
    targets = []
    deploy_ratios = [row['ratio_to_mmpretrain_deploy'] for row in results.get('variants', [])
                     if row['path'] == DEPLOY] + [
                         row['ratio_to_mmpretrain_deploy'] for row in _rows(results, DEPLOY)]
    if deploy_ratios:
        targets.append(dict(target='deploy eager >= 1.0x mmpretrain deploy, every variant '
                            'and batch measured', measured=f'min {min(deploy_ratios):.2f}x',
                            met=min(deploy_ratios) >= 1.0))
    for path in (RECOMMENDED, COMPILED):
        for row in (_rows(results, path, batch_size=16) if arch == 'A0' else []):
            ratio = row['ratio_to_mmpretrain_deploy']
            targets.append(dict(target=f'{path} >= 1.5x mmpretrain deploy eager, A0 batch 16',
                                measured=f'{ratio:.2f}x', met=ratio >= 1.5))
    for row in (_rows(results, INT8_ONNXRUNTIME, batch_size=16) if arch == 'A0' else []):
        ratio = row['ratio_to_mmpretrain_deploy']
        targets.append(dict(target=f'{INT8_ONNXRUNTIME} >= 3.0x mmpretrain deploy eager, A0 '
                            'batch 16', measured=f'{ratio:.2f}x', met=ratio >= 3.0))
    if arch == 'A0':
        targets += int8_targets(results)
        for path in (RECOMMENDED, COMPILED):
            fractions = [row['fraction_of_conv_roof'] for row in _rows(results, path)]
            if fractions:
                targets.append(dict(target=f'A0 {path} >= 0.8 of the 3x3-conv roof',
                                    measured=f'best {max(fractions):.2f}',
                                    met=max(fractions) >= 0.8))
    for row in results.get('conversion', []):
        if row['arch'] == 'B3':
            targets.append(dict(target='B3 conversion >= 2x faster than mmpretrain',
                                measured=f"{row['speedup']:.1f}x ({row['ours_s']:.3f} s vs "
                                f"{row['mmpretrain_s']:.3f} s)", met=row['speedup'] >= 2))
    onnx_errors = {row['arch']: row['onnx_max_relative_error']
                   for row in results.get('variants', []) if row['path'] == DEPLOY
                   and row['onnx_max_relative_error'] is not None}
    if 'onnx_max_relative_error' in results:
        onnx_errors.setdefault(arch, results['onnx_max_relative_error'])
    for onnx_arch in ('A0', 'B1g2', 'D2se'):
        if onnx_arch in onnx_errors:
            error = onnx_errors[onnx_arch]
            targets.append(dict(target=f'ONNX Runtime within 1e-4 relative of PyTorch, '
                                f'{onnx_arch}', measured=f'{error:.1e}',
                                met=error <= ONNX_TARGET))
    return targets


def int8_targets(results: dict) -> List[dict]:
    """INT8 (each runtime measured) against ONNX Runtime FP32 at batch 16, to the INT8
    issue's target for this run's CPU: 3x with VNNI, 1.8x on x86 without it."""
    machine = results.get('machine', {})
    vnni = machine.get('cpu_vnni') and not machine.get('onednn_isa_cap')
    target = INT8_TARGET_VNNI if vnni else INT8_TARGET_AVX2
    cpu_kind = 'VNNI CPU' if vnni else 'CPU without VNNI'
    fp32 = _rows(results, ONNXRUNTIME, batch_size=16)
    targets = []
    for path in (INT8_ONNXRUNTIME, INT8_OPENVINO):
        for row in (_rows(results, path, batch_size=16) if fp32 else []):
            ratio = row['images_per_s'] / fp32[0]['images_per_s']
            targets.append(dict(target=f'{path} >= {target}x {ONNXRUNTIME} (FP32), A0 batch '
                                f'16, {cpu_kind}', measured=f'{ratio:.2f}x',
                                met=ratio >= target))
    return targets


def format_targets(results: dict, arch: str) -> str:
    targets = check_targets(results, arch)
    if not targets:
        return ''
    return '## Targets\n\n' + markdown_table(
        ('target', 'measured', 'met'),
        [(target['target'], target['measured'], 'yes' if target['met'] else 'no')
         for target in targets])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark a RepVGG config against '
                                     "mmpretrain's RepVGG and torchvision ResNets.")
    parser.add_argument('config', help='train or deploy config of the model')
    parser.add_argument('--checkpoint', help='train-form checkpoint (default: random '
                        'weights)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 16],
                        help='batch sizes of the comparison table (default: 1 16)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 224 224; 32 32 with --quick)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', type=int,
                        help='torch and ONNX Runtime threads (default: torch\'s, one per '
                        'core); on a shared machine 1 avoids waiting for descheduled threads')
    parser.add_argument('--rounds', type=int, help='timed calls per row (default: 5)')
    parser.add_argument('--variants', nargs='+', default=[], metavar='ARCH',
                        help="published variants to sweep ('all' for the 12)")
    parser.add_argument('--conversion-arch', choices=sorted(ARCH_SETTINGS),
                        help='backbone whose conversion is timed (default: B3; the '
                        "config's with --quick)")
    parser.add_argument('--no-compile', action='store_true',
                        help='leave out the rows run by torch.compile, FP32 and PyTorch '
                        'INT8 (~30 s per shape)')
    parser.add_argument('--train', action='store_true',
                        help='measure training (batch 32) instead of inference')
    parser.add_argument('--quick', action='store_true',
                        help='tiny input, one round: check that every row is produced')
    parser.add_argument('--json', help='write all figures to this JSON file')
    parser.add_argument('--force', action='store_true', help='overwrite an existing --json')
    args = parser.parse_args(argv)
    if args.variants == ['all']:
        args.variants = list(ARCH_SETTINGS)
    unknown = sorted(set(args.variants) - set(ARCH_SETTINGS))
    if unknown:
        parser.error(f'--variants {" ".join(unknown)}: unknown; choose from '
                     f'{", ".join(ARCH_SETTINGS)} or all')
    if args.shape and min(args.shape) < 32:
        parser.error('--shape: RepVGG downsamples 32x; pass a height and width >= 32')
    if min(args.batch_sizes) < 1 or any(value is not None and value < 1
                                        for value in (args.rounds, args.threads)):
        parser.error('--batch-sizes, --rounds and --threads must be positive')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is visible; use --device cpu')
    if args.json:
        try:
            check_output(args.json, inputs=(args.config, args.checkpoint), overwrite=args.force)
        except (FileExistsError, CheckpointError) as error:
            parser.error(f'--json {error}')
    return args


def settings_from(args: argparse.Namespace, arch: str) -> BenchmarkSettings:
    overrides = dict(batch_sizes=tuple(args.batch_sizes), device=args.device,
                     compile=not args.no_compile, variants=tuple(args.variants),
                     train=args.train, threads=args.threads)
    if args.shape:
        overrides['input_size'] = tuple(args.shape)
    if args.rounds:
        overrides['rounds'] = args.rounds
    if args.conversion_arch or args.quick:
        overrides['conversion_arch'] = args.conversion_arch or arch
    if args.quick:
        if args.batch_sizes == [1, 16]:  # the default: keep --quick quick
            overrides['batch_sizes'] = (2, )
        return BenchmarkSettings.quick(**overrides)
    return BenchmarkSettings(**overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model = build_train_model(args.config)
        if args.checkpoint:
            state = load_checkpoint(model, args.checkpoint, 'convert').source
            if state.form == 'deploy':
                raise CheckpointError(f'{args.checkpoint} is in deploy form; the benchmark '
                                      'compares both forms of the same weights, pass a '
                                      'train-form checkpoint')
        else:
            randomize_batch_norms_(model)
    except (ConfigError, CheckpointError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    arch = arch_name(model)
    settings = settings_from(args, arch)
    print(f'torch threads: {settings.threads or torch.get_num_threads()}; device: '
          f'{settings.device}; {args.config} ({arch})', flush=True)
    results = (run_training_benchmark(settings, arch) if settings.train else
               run_inference_benchmark(model, settings))
    results.update(config=args.config, arch=arch)
    print(format_report(results))
    print(format_targets(results, arch))
    if args.json:
        try:
            # Never half-written; without --force never over a file that appeared while
            # the figures were measured (another run writing the same path).
            with atomic_output(args.json, overwrite=args.force) as temporary_path:
                with open(temporary_path, 'w') as stream:
                    json.dump(results, stream, indent=1)
        except FileExistsError as error:  # another run wrote it meanwhile; kept
            print(f'error: {error} (the figures are printed above)', file=sys.stderr)
            return 1
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Markdown tables from a benchmark's JSON-ready results (plain data in, text out)."""
from typing import Dict, Iterable, List, Sequence

from .emulated_cpu import hidden_isa_note
from .rows import DEPLOY


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' if index == 0 else '---:' for index in range(len(header)))
             + '|']
    lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
    return '\n'.join(lines)


def _number(value, digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _machine_line(results: dict) -> str:
    machine = results['machine']
    isa = ', '.join(machine.get('cpu_isa') or ['ISA not recorded'])
    cap = (f", oneDNN capped to {machine['onednn_isa_cap']}"
           if machine.get('onednn_isa_cap') else '')
    hidden = (f"; {hidden_isa_note(machine['cpu_hidden_isa'])}"
              if machine.get('cpu_hidden_isa') else '')
    int8 = (f"; ONNX Runtime INT8: {machine['int8_weight_bits']}-bit weights on "
            f"{machine['int8_kernels']} kernels" if machine.get('int8_weight_bits') else '')
    extras = ''.join(f", {name} {results[name]}" for name in ('openvino', 'torchao')
                     if name in results)
    return (f"Machine: {machine['cpu']} ({isa}{cap}{hidden}{int8}), {machine['logical_cpus']} "
            f"logical CPUs, "
            f"{machine['torch_threads']} torch threads; torch {machine['torch']}, "
            f"mmpretrain {machine['mmpretrain']}, onnxruntime {machine['onnxruntime']}"
            f"{extras}; "
            f"1-min load average {machine['load_average_1min']:.1f} at the start, "
            f"{results.get('load_average_1min_end', float('nan')):.1f} at the end.")


def format_inference(results: dict) -> str:
    settings = results['settings']
    height, width = settings['input_size']
    parts = [_machine_line(results),
             f"Input {height}x{width}; {settings['warmup']} warm-up call(s), median of "
             f"{settings['rounds']} timed calls per row, rows timed round-robin; spread = "
             '(slowest - fastest) / median.',
             f"3x3-conv roof: {results['roof']['gmacs_per_s']:.1f} G multiply-adds/s "
             f"(one conv, input (N, C, H, W) = {results['roof']['shape']} stored channels-last); "
             f"the deploy model "
             f"costs {results['deploy_gmacs_per_image']:.3f} G multiply-adds per image."]
    rows = [(row['path'], row['batch_size'], _number(row['images_per_s'], 1),
             _number(row['latency_ms_median'], 1), _number(row['spread']),
             _number(row['ratio_to_mmpretrain_deploy']),
             _number(row.get('fraction_of_conv_roof')))
            for row in results['inference']]
    parts.append(markdown_table(('path', 'batch', 'images/s', 'latency ms (median)',
                                 'spread', 'x mmpretrain deploy', 'fraction of conv roof'),
                                rows))
    conversion = [(row['arch'], _number(row['ours_s'], 3), _number(row['mmpretrain_s'], 3),
                   _number(row['speedup'], 1)) for row in results['conversion']]
    parts.append(markdown_table(('conversion (backbone)', 'ours s', 'mmpretrain s',
                                 'speedup'), conversion))
    if 'openvino_missing' in results:
        parts.append(f"No OpenVINO rows: {results['openvino_missing']}")
    if 'torch_int8_missing' in results:
        parts.append(f"No PyTorch INT8 row: {results['torch_int8_missing']}")
    if 'onnx_max_relative_error' in results:
        parts.append(f"ONNX Runtime vs PyTorch max relative error: "
                     f"{results['onnx_max_relative_error']:.1e}")
    return '\n\n'.join(parts)


def format_scaling(results: dict) -> str:
    parts = []
    for key, label in (('batch_size', 'batch size'), ('input_size', 'input size')):
        rows = results['scaling'][key]
        columns = sorted({row['batch_size'] if key == 'batch_size' else row['input_size'][0]
                          for row in rows})
        by_path: Dict[str, Dict[int, float]] = {}
        for row in rows:
            column = row['batch_size'] if key == 'batch_size' else row['input_size'][0]
            by_path.setdefault(row['path'], {})[column] = row['images_per_s']
        parts.append(markdown_table(
            [f'images/s by {label}'] + [str(column) for column in columns],
            [[path] + [_number(values.get(column), 1) for column in columns]
             for path, values in by_path.items()]))
    return '\n\n'.join(parts)


def format_variants(results: dict) -> str:
    rows = [(row['arch'], row['path'], _number(row['top1']), _number(row['images_per_s'], 1),
             _number(row['ratio_to_mmpretrain_deploy']),
             '-' if row['max_relative_error_vs_train'] is None else
             f"{row['max_relative_error_vs_train']:.1e}",
             '-' if row['onnx_max_relative_error'] is None or row['path'] != DEPLOY else
             f"{row['onnx_max_relative_error']:.1e}")
            for row in results['variants']]
    batch = results['settings']['variant_batch_size']
    return markdown_table(('variant', 'path', 'published top-1', f'images/s (batch {batch})',
                           'x mmpretrain deploy', 'max rel. error vs train',
                           'ONNX Runtime max rel. error'), rows)


def format_training(rows: List[dict]) -> str:
    return markdown_table(
        ('implementation', 'arch', 'with_cp', 'batch', 'images/s', 'spread',
         'peak memory MiB'),
        [(row['implementation'], row['arch'], row['with_cp'], row['batch_size'],
          _number(row['images_per_s'], 2), _number(row['spread']),
          _number(row['peak_memory_mib'], 0)) for row in rows])


def format_report(results: dict) -> str:
    """All tables of a run, in the order of docs/benchmarks.md."""
    parts = []
    if results.get('inference'):
        parts += ['## Inference', format_inference(results),
                  '## Scaling', format_scaling(results)]
    if results.get('variants'):
        parts += ['## Variants', format_variants(results)]
    if results.get('training'):
        parts += ['## Training', format_training(results['training'])]
    return '\n\n'.join(parts)

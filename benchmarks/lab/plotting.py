"""PNG figures from a benchmark's JSON (see benchmarks/plot_benchmarks.py).

Needs only matplotlib (the ``plot`` extra). The figures are ``matplotlib.figure.Figure``
objects drawn without pyplot: no backend is chosen and no global figure state is left,
so plotting works without a display and changes nothing in the caller's matplotlib.
"""
from typing import Dict, List

from mmrepvgg._utils import require

from .rows import DEPLOY, INT8_ONNXRUNTIME, MMPRETRAIN_DEPLOY, ONNXRUNTIME, RECOMMENDED, TRAIN

Figure = require('matplotlib.figure', 'plot').Figure

_STYLES = {DEPLOY: dict(marker='o', color='tab:blue'),
           RECOMMENDED: dict(marker='s', color='tab:green'),
           ONNXRUNTIME: dict(marker='^', color='tab:orange'),
           INT8_ONNXRUNTIME: dict(marker='*', color='tab:red'),
           MMPRETRAIN_DEPLOY: dict(marker='x', color='tab:gray')}


def _variant_rows(results: dict) -> Dict[str, Dict[str, dict]]:
    """``{path: {arch: row}}`` of the variant sweep."""
    by_path: Dict[str, Dict[str, dict]] = {}
    for row in results.get('variants', []):
        by_path.setdefault(row['path'], {})[row['arch']] = row
    if not by_path:
        raise ValueError('the results hold no variant sweep; run the benchmark with '
                         '--variants all')
    return by_path


def _caption(results: dict) -> str:
    machine = results['machine']
    height, width = results['settings']['input_size']
    threads = machine['torch_threads']
    return (f"{machine['cpu']}, {threads} torch thread{'' if threads == 1 else 's'}, "
            f"batch {results['settings']['variant_batch_size']}, {height}x{width}")


def plot_accuracy_vs_speed(results: dict, path: str) -> None:
    """Published top-1 against measured images/s per variant: the paper's speed/accuracy
    figure on this machine."""
    by_path = _variant_rows(results)
    figure = Figure(figsize=(7, 5))
    axes = figure.subplots()
    for name, style in _STYLES.items():
        rows = by_path.get(name, {})
        if not rows:
            continue
        archs = [arch for arch, row in rows.items() if row['top1'] is not None]
        axes.plot([rows[arch]['images_per_s'] for arch in archs],
                  [rows[arch]['top1'] for arch in archs], linestyle='none', label=name,
                  **style)
        if name == RECOMMENDED:
            for arch in archs:
                axes.annotate(arch, (rows[arch]['images_per_s'], rows[arch]['top1']),
                              textcoords='offset points', xytext=(4, 3), fontsize=8)
    axes.set_xscale('log')
    axes.set_xlabel('measured images/s (log scale)')
    axes.set_ylabel('published ImageNet top-1 (%) (FP32; INT8 at the same value)')
    axes.set_title(f'RepVGG deploy: accuracy vs speed\n{_caption(results)}', fontsize=10)
    axes.grid(True, which='both', alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_train_vs_deploy(results: dict, path: str) -> None:
    """Bars of images/s per variant: train form, deploy eager, recommended path, ONNX
    Runtime FP32 and INT8 (when measured) and mmpretrain's deploy form."""
    by_path = _variant_rows(results)
    names: List[str] = [name for name in (TRAIN, DEPLOY, RECOMMENDED, ONNXRUNTIME,
                                          INT8_ONNXRUNTIME, MMPRETRAIN_DEPLOY)
                        if name in by_path]
    archs = list(by_path[names[0]])
    width = 0.8 / len(names)
    figure = Figure(figsize=(10, 4.5))
    axes = figure.subplots()
    for index, name in enumerate(names):
        axes.bar([position + (index - (len(names) - 1) / 2) * width
                  for position in range(len(archs))],
                 [by_path[name][arch]['images_per_s'] for arch in archs], width, label=name)
    axes.set_xticks(range(len(archs)), archs)
    axes.set_yscale('log')
    axes.set_ylabel('images/s (log scale)')
    axes.set_title(f'Train form vs deploy form, same weights\n{_caption(results)}',
                   fontsize=10)
    axes.grid(True, axis='y', which='both', alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)

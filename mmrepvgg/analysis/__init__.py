"""Performance analysis: complexity counting and benchmarking (ONNX and INT8 live in
:mod:`mmrepvgg.deploy`).

- :mod:`.complexity`: parameters and FLOPs with mmengine's ``FlopAnalyzer``;
- :mod:`.timing`: round-robin timing on a shared machine, the 3x3-conv roof;
- :mod:`.benchmark`: the comparisons of ``tools/analysis_tools/benchmark.py``;
- :mod:`.report`: its Markdown tables and target checks;
- :mod:`.plotting`: the PNGs of ``docs/benchmarks.md``.

Only :mod:`.complexity` is imported here; the others pull in onnxruntime, torchvision or
matplotlib and are imported where used.
"""
from .complexity import Complexity, count_complexity, flop_analyzer

__all__ = ['Complexity', 'count_complexity']

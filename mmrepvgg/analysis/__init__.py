"""Performance analysis: complexity counting and benchmarking (ONNX and INT8 live in
:mod:`mmrepvgg.deploy`).

- :mod:`.complexity`: parameters and multiply-adds with mmengine's ``FlopAnalyzer``;
- :mod:`.timing`: round-robin timing on a shared machine, the 3x3-conv roof;
- :mod:`.benchmark`: the comparisons of ``tools/analysis_tools/benchmark.py`` (needs the
  ``onnx`` extra);
- :mod:`.rows`: the names of its rows; :mod:`.report`: its Markdown tables (plain data,
  no torch); :mod:`.plotting`: the PNGs of ``docs/benchmarks.md`` (matplotlib only, the
  ``plot`` extra). What counts as a met target is the benchmark tool's business.

Only :mod:`.complexity` is imported here; the others are imported where used.
"""
from .complexity import Complexity, count_complexity

__all__ = ['Complexity', 'count_complexity']

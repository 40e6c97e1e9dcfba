"""Performance analysis: complexity counting (:mod:`.complexity`: parameters and
multiply-adds with mmengine's ``FlopAnalyzer``) and round-robin timing on a shared machine
(:mod:`._timing`). The benchmarks that use them live outside the package, in ``benchmarks/``.
"""
from .complexity import Complexity, count_complexity

__all__ = ['Complexity', 'count_complexity']

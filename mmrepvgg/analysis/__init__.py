"""Performance analysis: complexity counting, benchmarking and ONNX export.

- :mod:`.complexity`: parameters and FLOPs with mmengine's ``FlopAnalyzer``.
"""
from .complexity import (Complexity, build_model, count_complexity, flop_analyzer,
                         repvgg_classifier_cfg)

__all__ = ['Complexity', 'build_model', 'count_complexity', 'flop_analyzer',
           'repvgg_classifier_cfg']

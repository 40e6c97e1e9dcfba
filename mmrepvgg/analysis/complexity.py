"""Parameter and multiply-add counts of RepVGG models, traced by mmengine's ``FlopAnalyzer``
(classifiers through ``extract_feat``, no head); docs/benchmarks.md compares them with the
published figures."""
from collections import Counter
from math import prod
from typing import List, NamedTuple, Sequence, Union

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import conv_flop_jit, elementwise_flop_counter, get_shape
from mmengine.config import Config
from torch import nn

from ..models import build_model

PUBLISHED_INPUT_SIZE = (224, 224)  # (height, width) of the published FLOPs
# Operator names (keys of FlopAnalyzer.by_operator) only the published convention counts.
_PUBLISHED_ONLY_OPERATORS = ('conv_bias', 'relu', 'relu_')


class _Complexity(NamedTuple):
    """The size of a model for one ``(1, 3, H, W)`` image."""
    params: int
    macs: int  # the published convention: conv multiply-adds, bias adds, BN, ReLU, pooling
    macs_mmengine: int  # mmengine's default: no bias adds or ReLUs
    input_size: Sequence[int]  # (H, W)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def _conv_with_bias_flop_jit(inputs: List, outputs: List) -> Counter:
    """Conv multiply-adds plus, under ``'conv_bias'``, one add per output element when the
    conv has a bias (input 2 of ``aten::_convolution``)."""
    counts = conv_flop_jit(inputs, outputs)
    if get_shape(inputs[2]) is not None:
        counts['conv_bias'] = prod(get_shape(outputs[0]))
    return counts


def _flop_analyzer(model: nn.Module, inputs: torch.Tensor) -> FlopAnalyzer:
    """A quiet ``FlopAnalyzer`` of ``model(inputs)``, conv bias adds and ReLUs counted apart."""
    analyzer = FlopAnalyzer(model, (inputs, ))
    count_outputs = elementwise_flop_counter(input_scale=0, output_scale=1)
    analyzer.set_op_handle(**{'aten::_convolution': _conv_with_bias_flop_jit,
                              'aten::relu': count_outputs, 'aten::relu_': count_outputs})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


class _FeatureExtractor(nn.Module):
    """Exposes ``model.extract_feat`` as ``forward`` without patching ``model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model.extract_feat(inputs)


def count_complexity(model: Union[nn.Module, dict, Config],
                     input_size: Sequence[int] = PUBLISHED_INPUT_SIZE) -> _Complexity:
    """Count the parameters and multiply-adds of a model (or a model dict or config, built
    in the ``mmrepvgg`` scope) for one 3-channel image of ``input_size`` ``(H, W)``."""
    if isinstance(model, Config):
        model = model.model
    if isinstance(model, dict):
        model = build_model(model)
    height, width = input_size
    traced = _FeatureExtractor(model) if hasattr(model, 'extract_feat') else model
    with torch.no_grad():
        by_operator = _flop_analyzer(traced.eval(), torch.zeros(1, 3, height, width)
                                     ).by_operator()
    macs = sum(by_operator.values())
    macs_mmengine = macs - sum(by_operator[name] for name in _PUBLISHED_ONLY_OPERATORS)
    return _Complexity(parameter_count(model)[''], macs, macs_mmengine, (height, width))

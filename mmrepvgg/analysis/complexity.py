"""Parameter and FLOP counts of RepVGG models, counted with mmengine's analysis tools.

FLOPs are counted by mmengine's ``FlopAnalyzer`` (a port of fvcore's, which traces one
forward pass) in two conventions, from the same trace:

- ``macs``: the convention of the published table, where they are called FLOPs
  (OpenMMLab's RepVGG model page, made with mmcv's former hook-based counter): conv
  multiply-adds **plus one add per output element of a conv with bias**, BatchNorm (2
  per element), **ReLU (1 per element)** and average pooling (1 per input element).
  This reproduces the published train and deploy FLOPs of every variant to 0.01 G, D2se
  deploy excepted: the published 32.85 G was counted on mmcls's deploy forward, which
  skips the SE layers (mmpretrain 1.2.0 still does); with them, as this project runs
  them, it is 32.86 G.
- ``macs_mmengine``: mmengine's defaults (what ``get_model_complexity_info`` and
  mmpretrain 1.x's ``get_flops.py`` print, the figures of mmpretrain's metafiles): the
  same without the bias adds and ReLUs.

Models with ``extract_feat`` (mmpretrain classifiers) are traced through the backbone and
neck, as both mmcls's and mmpretrain's ``get_flops.py`` do: the linear head's multiply-adds
(``C x num_classes``, 0.001-0.003 G) are not in the published FLOPs; its parameters are in
the published parameter counts, and in ``params`` here.
"""
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


class Complexity(NamedTuple):
    """The size of a model for one ``(1, 3, H, W)`` image.

    Attributes:
        params: number of parameters (all of the model's tensors that are parameters).
        macs: number of multiply-adds in the published table's convention (see module
            docstring), what OpenMMLab's tables call FLOPs.
        macs_mmengine: number of multiply-adds in mmengine's default convention.
        input_size: ``(H, W)`` that was counted.
    """
    params: int
    macs: int
    macs_mmengine: int
    input_size: Sequence[int]

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        """Multiply-adds in G (1e9), published convention."""
        return self.macs / 1e9


def _conv_with_bias_flop_jit(inputs: List, outputs: List) -> Counter:
    """Conv multiply-adds (mmengine's handle) plus, under ``'conv_bias'``, one add per
    output element when the conv has a bias (input 2 of ``aten::_convolution``)."""
    counts = conv_flop_jit(inputs, outputs)
    if get_shape(inputs[2]) is not None:
        counts['conv_bias'] = prod(get_shape(outputs[0]))
    return counts


def flop_analyzer(model: nn.Module, inputs: torch.Tensor) -> FlopAnalyzer:
    """mmengine's ``FlopAnalyzer`` for ``model(inputs)`` with the published convention's
    extra operators (conv bias adds, ReLU) counted under their own names, quiet."""
    analyzer = FlopAnalyzer(model, (inputs, ))
    count_outputs = elementwise_flop_counter(input_scale=0, output_scale=1)
    analyzer.set_op_handle(**{'aten::_convolution': _conv_with_bias_flop_jit,
                              'aten::relu': count_outputs, 'aten::relu_': count_outputs})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def count_complexity(model: Union[nn.Module, dict, Config],
                     input_size: Sequence[int] = PUBLISHED_INPUT_SIZE) -> Complexity:
    """Count the parameters and multiply-adds of a model for one 3-channel image.

    Args:
        model: a model, a model dict, or a config whose ``model`` is counted (built in
            the ``mmrepvgg`` scope, in the form -- train or deploy -- it describes).
        input_size: ``(H, W)`` of the image. Defaults to 224x224, as published.
    """
    if isinstance(model, Config):
        model = model.model
    if isinstance(model, dict):
        model = build_model(model)
    height, width = input_size
    traced = FeatureExtractor(model) if hasattr(model, 'extract_feat') else model
    with torch.no_grad():
        by_operator = flop_analyzer(traced.eval(), torch.zeros(1, 3, height, width)
                                    ).by_operator()
    macs = sum(by_operator.values())
    macs_mmengine = macs - sum(by_operator[name] for name in _PUBLISHED_ONLY_OPERATORS)
    return Complexity(parameter_count(model)[''], macs, macs_mmengine, (height, width))


class FeatureExtractor(nn.Module):
    """Exposes ``model.extract_feat`` as ``forward`` without patching ``model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model.extract_feat(inputs)

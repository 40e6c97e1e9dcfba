"""ONNX Runtime's static INT8 quantizer applied to an FP32 ONNX file: QDQ with
per-channel symmetric int8 weights and per-tensor uint8 activations whose ranges come from
calibration on real, preprocessed images.

ONNX Runtime fuses each QuantizeLinear/DequantizeLinear pair around a conv into an integer
conv (u8 x s8, VNNI where the CPU has it). A deployed RepVGG is a chain of 3x3 convs +
ReLU, so nearly all of its work becomes integer work. Per-channel weights matter for
RepVGG: the fused kernel adds the 3x3, 1x1 and identity branches, whose scales differ
widely between output channels, and one scale per tensor would leave the small channels a
few levels (Chu et al., AAAI 2024, discuss why plain RepVGG quantizes badly; QARepVGG is
the block designed to quantize well). The node that writes the logits (the classifier's
linear head, a tiny fraction of the work) stays FP32: quantized logits take few distinct
values, and ties between classes made top-1 depend on how an evaluator breaks them.

The activation ranges come from one of :data:`CALIBRATION_METHODS`: min-max of each
activation over the calibration images, percentile (clips the rare largest values) or
entropy (the range whose histogram keeps the KL divergence to FP32 smallest).
"""
import logging
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..checkpoint import atomic_output
from .._utils import require
from .onnx_runtime import OnnxRuntimeModel

onnx = require('onnx', 'onnx')
quantization = require('onnxruntime.quantization', 'onnx')

ProgressCallback = Callable[[int, int, int], None]  # (batch done, batches, images so far)
CALIBRATION_METHODS = {
    'minmax': quantization.CalibrationMethod.MinMax,
    'percentile': quantization.CalibrationMethod.Percentile,
    'entropy': quantization.CalibrationMethod.Entropy,
}
# The share of each activation's values the percentile method keeps inside its range.
CALIBRATION_PERCENTILE = 99.999


class _CalibrationBatches(quantization.CalibrationDataReader):
    """Feeds preprocessed image batches ``(N, C, H, W)`` float32 to ONNX Runtime's
    calibrator, calling ``progress`` after each one."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str,
                 progress: Optional[ProgressCallback] = None):
        self.batches = list(batches)
        self.input_name = input_name
        self.progress = progress
        self.position = 0

    def get_next(self) -> Optional[dict]:
        if self.position == len(self.batches):
            return None
        batch = self.batches[self.position]
        self.position += 1
        if self.progress is not None:
            self.progress(self.position, len(self.batches),
                          sum(len(done) for done in self.batches[:self.position]))
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


def _output_nodes(path: str) -> List[str]:
    """Names of the nodes of an ONNX file that write its graph outputs (the head)."""
    graph = onnx.load(path, load_external_data=False).graph
    outputs = {output.name for output in graph.output}
    return [node.name for node in graph.node if outputs & set(node.output)]


def check_calibration(method: str, offered: Sequence[str],
                      calibration: Sequence[np.ndarray], runtime: str) -> None:
    """Refuse, in one line, a calibration ``method`` the runtime does not offer or a
    calibration without images.

    Raises:
        ValueError: naming what to pass instead.
    """
    if method not in offered:
        raise ValueError(f'calibration method {method!r} is not offered for {runtime}; '
                         f'choose one of {", ".join(offered)}')
    if not calibration or not sum(len(batch) for batch in calibration):
        raise ValueError('no calibration images: INT8 activation ranges come from real, '
                         'preprocessed training images; pass at least one batch')


def conv_nodes(path: str) -> List[str]:
    """Names of the Conv nodes of an ONNX file, in graph order (the layers INT8 changes)."""
    graph = onnx.load(path, load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == 'Conv']


def quantize_int8(fp32_path: str, int8_path: str, calibration: Sequence[np.ndarray],
                  overwrite: bool = False,
                  progress: Optional[ProgressCallback] = None,
                  method: str = 'minmax', fp32_nodes: Sequence[str] = (),
                  only_nodes: Optional[Sequence[str]] = None, weight_bits: int = 8) -> None:
    """Write the static INT8 (QDQ, per-channel) form of ``fp32_path`` to ``int8_path``,
    atomically: an interrupted or failed run leaves ``int8_path`` as it was. The nodes
    writing the graph outputs stay FP32 (see the module docstring).

    Args:
        fp32_path: an FP32 ONNX file with one image input.
        int8_path: the file to write.
        calibration: preprocessed image batches ``(N, C, H, W)`` float32, as the model
            receives them; the activation ranges come from them.
        overwrite: replace an existing ``int8_path``.
        progress: called after each calibration batch.
        method: how a range is drawn from the calibration activations, a key of
            :data:`CALIBRATION_METHODS`.
        fp32_nodes: more nodes to keep FP32 (mixed precision).
        only_nodes: quantize these nodes only (None: every node it can).
        weight_bits: 8, or 7 (weights within +-64, ONNX Runtime's ``reduce_range``: what
            keeps the u8s8 kernels of x86 CPUs without VNNI exact, see
            :mod:`._host_cpu`).

    Raises:
        FileExistsError: ``int8_path`` exists and ``overwrite`` is False.
        ValueError: an unknown ``method``, no calibration images, or a model without a
            conv to quantize.
    """
    check_calibration(method, CALIBRATION_METHODS, calibration, 'ONNX Runtime')
    if not conv_nodes(fp32_path):
        raise ValueError(f'{fp32_path}: the model has no Conv to quantize; INT8 here is '
                         'for conv networks such as RepVGG')
    input_name = OnnxRuntimeModel(fp32_path).input_name
    reader = _CalibrationBatches(calibration, input_name, progress)
    root_logger = logging.getLogger()
    level = root_logger.level
    # quantize_static logs a root warning recommending its pre-processing (shape
    # inference and graph optimization); measured on A0 it made the INT8 file slower
    # (180 vs 243 images/s, 224x224 batch 16), so it is skipped and the advice hidden.
    root_logger.setLevel(logging.ERROR)
    try:
        with atomic_output(int8_path, overwrite) as temporary_path:
            quantization.quantize_static(
                fp32_path, temporary_path, reader,
                quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8, reduce_range=weight_bits == 7,
                calibrate_method=CALIBRATION_METHODS[method],
                nodes_to_quantize=list(only_nodes) if only_nodes is not None else None,
                nodes_to_exclude=[*_output_nodes(fp32_path), *fp32_nodes],
                extra_options=dict(CalibPercentile=CALIBRATION_PERCENTILE))
    finally:
        root_logger.setLevel(level)

"""ONNX Runtime's static INT8 (QDQ) of an FP32 ONNX file: per-channel int8 weights (a fused
kernel's channels differ widely in scale), per-tensor uint8 activations; the logits stay FP32,
where INT8 would tie classes (docs/int8.md)."""
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
    """Feeds batches ``(N, C, H, W)`` to the calibrator, calling ``progress`` after each."""

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
    """Names of the nodes that write the graph outputs (the head)."""
    graph = onnx.load(path, load_external_data=False).graph
    outputs = {output.name for output in graph.output}
    return [node.name for node in graph.node if outputs & set(node.output)]


def check_calibration(method: str, offered: Sequence[str],
                      calibration: Sequence[np.ndarray], runtime: str) -> None:
    """ValueError (one line) for a ``method`` ``runtime`` lacks or no calibration images."""
    if method not in offered:
        raise ValueError(f'calibration method {method!r} is not offered for {runtime}; '
                         f'choose one of {", ".join(offered)}')
    if not calibration or not sum(len(batch) for batch in calibration):
        raise ValueError('no calibration images: INT8 activation ranges come from real, '
                         'preprocessed training images; pass at least one batch')


def conv_nodes(path: str) -> List[str]:
    """Names of the Conv nodes of an ONNX file, in graph order."""
    graph = onnx.load(path, load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == 'Conv']


def quantize_int8(fp32_path: str, int8_path: str, calibration: Sequence[np.ndarray],
                  overwrite: bool = False,
                  progress: Optional[ProgressCallback] = None,
                  method: str = 'minmax', fp32_nodes: Sequence[str] = (),
                  only_nodes: Optional[Sequence[str]] = None, weight_bits: int = 8) -> None:
    """Write the static INT8 form of ``fp32_path`` to ``int8_path``, atomically, calibrated
    on batches ``(N, C, H, W)`` float32 with ``method``; ``fp32_nodes`` stay FP32,
    ``only_nodes`` (None: all) are quantized; ``weight_bits`` 7: within +-64. Raises
    FileExistsError, or ValueError for an unknown ``method``, no calibration images or conv."""
    check_calibration(method, CALIBRATION_METHODS, calibration, 'ONNX Runtime')
    if not conv_nodes(fp32_path):
        raise ValueError(f'{fp32_path}: the model has no Conv to quantize; INT8 here is '
                         'for conv networks such as RepVGG')
    reader = _CalibrationBatches(calibration, OnnxRuntimeModel(fp32_path).input_name,
                                 progress)
    root_logger = logging.getLogger()
    level = root_logger.level
    # quantize_static's root warning recommends its pre-processing, which made the INT8
    # file slower when measured on A0: it is skipped and the advice hidden.
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

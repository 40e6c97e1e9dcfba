"""Static INT8 quantization of an exported RepVGG for ONNX Runtime, calibrated on real,
preprocessed images, and checked against the FP32 file on held-out images.

The format is ONNX Runtime's QDQ with per-channel symmetric int8 weights and per-tensor
uint8 activations whose ranges come from calibration (min-max of each activation over
the calibration images): ONNX Runtime fuses each QuantizeLinear/DequantizeLinear pair
around a conv into an integer conv (u8 x s8, VNNI where the CPU has it). A deployed
RepVGG is a chain of 3x3 convs + ReLU, so nearly all of its work becomes integer work.
Per-channel weights matter for RepVGG: the fused kernel adds the 3x3, 1x1 and identity
branches, whose scales differ widely between output channels, and one scale per tensor
would leave the small channels a few levels (Chu et al., AAAI 2024, discuss why plain
RepVGG quantizes badly; QARepVGG is the block designed to quantize well). The node that
writes the logits (the classifier's linear head, a tiny fraction of the work) stays FP32:
quantized logits take few distinct values, and ties between classes made top-1 depend on
how an evaluator breaks them (arg-max and top-k disagreed on 2 of 360 digits images).
"""
import logging
import os
import tempfile
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
from torch import nn

from ..checkpoint import atomic_output
from ..utils import require
from .onnx_export import DEFAULT_OPSET, export_onnx, onnxruntime_session

onnx = require('onnx', 'onnx')
quantization = require('onnxruntime.quantization', 'onnx')

ProgressCallback = Callable[[int, int, int], None]  # (batch done, batches, images so far)


class CalibrationBatches(quantization.CalibrationDataReader):
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


def output_nodes(path: str) -> List[str]:
    """Names of the nodes of an ONNX file that write its graph outputs (the head)."""
    graph = onnx.load(path, load_external_data=False).graph
    outputs = {output.name for output in graph.output}
    return [node.name for node in graph.node if outputs & set(node.output)]


def quantize_int8(fp32_path: str, int8_path: str, calibration: Sequence[np.ndarray],
                  overwrite: bool = False,
                  progress: Optional[ProgressCallback] = None) -> None:
    """Write the static INT8 (QDQ, per-channel) form of ``fp32_path`` to ``int8_path``,
    atomically: an interrupted or failed run leaves ``int8_path`` as it was. The nodes
    writing the graph outputs stay FP32 (see the module docstring).

    Args:
        fp32_path: an FP32 ONNX file with one image input.
        int8_path: the file to write.
        calibration: preprocessed image batches ``(N, C, H, W)`` float32, as the model
            receives them; the activation ranges are their min and max.
        overwrite: replace an existing ``int8_path``.
        progress: called after each calibration batch.

    Raises:
        FileExistsError: ``int8_path`` exists and ``overwrite`` is False.
    """
    input_name = onnxruntime_session(fp32_path).get_inputs()[0].name
    reader = CalibrationBatches(calibration, input_name, progress)
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
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                nodes_to_exclude=output_nodes(fp32_path))
    finally:
        root_logger.setLevel(level)


class Agreement(NamedTuple):
    """How two models' top-1 classes compare on the same images.

    Attributes:
        num_images: images compared.
        num_agree: images on which both predict the same class.
        reference_correct / candidate_correct: images each classifies as labelled.
    """
    num_images: int
    num_agree: int
    reference_correct: int
    candidate_correct: int

    @property
    def rate(self) -> float:
        return self.num_agree / self.num_images


def top1_agreement(reference_path: str, candidate_path: str,
                   batches: Iterable[tuple]) -> Agreement:
    """Compare the top-1 classes of two ONNX classifiers on ``(images, labels)`` batches
    (images ``(N, C, H, W)`` float32 as the model receives them, labels ``(N, )``)."""
    sessions = [onnxruntime_session(path) for path in (reference_path, candidate_path)]
    counts = np.zeros(4, dtype=np.int64)
    for images, labels in batches:
        reference, candidate = (
            np.asarray(session.run(None, {session.get_inputs()[0].name: images})[0]
                       ).argmax(axis=1) for session in sessions)
        counts += [len(labels), (reference == candidate).sum(),
                   (reference == labels).sum(), (candidate == labels).sum()]
    if counts[0] == 0:
        raise ValueError('no images to compare the two models on')
    return Agreement(*(int(count) for count in counts))


class Int8Report(NamedTuple):
    """What :func:`export_int8` wrote and measured.

    Attributes:
        path: absolute path of the INT8 ONNX file.
        calibration_images: images the activation ranges come from.
        fp32_max_relative_error: the FP32 export's error against PyTorch (see
            :func:`.onnx_export.export_onnx`).
        agreement: INT8 against FP32 on the held-out images (None without any).
    """
    path: str
    calibration_images: int
    fp32_max_relative_error: float
    agreement: Optional[Agreement]


def export_int8(model: nn.Module, int8_path: str, calibration: List[np.ndarray],
                held_out: Optional[Iterable[tuple]] = None, overwrite: bool = False,
                progress: Optional[ProgressCallback] = None,
                opset: int = DEFAULT_OPSET) -> Int8Report:
    """Export the deploy form of ``model`` to a temporary FP32 ONNX file (dynamic batch,
    the calibration images' size), quantize it to ``int8_path``, then (given
    ``held_out`` ``(images, labels)`` batches) compare the two on them.

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        int8_path, calibration, overwrite, progress: see :func:`quantize_int8`.
        held_out: batches not used for calibration; None skips the comparison.
        opset: ONNX opset version; per-channel QDQ needs 13 or later.

    Raises:
        FileExistsError: ``int8_path`` exists and ``overwrite`` is False (checked before
            any work).
    """
    if os.path.exists(int8_path) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(int8_path)} exists; pass --force '
                              '(overwrite=True) to replace it')
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'),
                           (1, *calibration[0].shape[1:]), dynamic_batch=True,
                           opset=opset)
        quantize_int8(fp32.path, int8_path, calibration, overwrite, progress)
        agreement = (None if held_out is None else
                     top1_agreement(fp32.path, int8_path, held_out))
    return Int8Report(os.path.abspath(int8_path), sum(len(batch) for batch in calibration),
                      fp32.max_relative_error, agreement)

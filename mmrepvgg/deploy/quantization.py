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

Recipes beyond that default: the activation ranges from another calibration method
(:data:`CALIBRATION_METHODS`: percentile clips the rare largest values, entropy picks the
range whose histogram keeps the KL divergence to FP32 smallest), and mixed precision:
:func:`layer_sensitivity` quantizes one conv at a time and measures how far the logits
move (SQNR against FP32), :func:`fp32_convs` keeps the worst ones FP32 (for any runtime;
:func:`mixed_precision_nodes` runs it on ONNX Runtime).
"""
import logging
import math
import os
import tempfile
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
from torch import nn

from ..checkpoint import atomic_output
from ..utils import require
from .adaround import adaround
from .host_cpu import Int8WeightChoice, host_cpu, int8_weight_choice
from .onnx_export import DEFAULT_OPSET, export_onnx, onnxruntime_session

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
            :mod:`.host_cpu`).

    Raises:
        FileExistsError: ``int8_path`` exists and ``overwrite`` is False.
        ValueError: an unknown ``method``, no calibration images, or a model without a
            conv to quantize.
    """
    check_calibration(method, CALIBRATION_METHODS, calibration, 'ONNX Runtime')
    if not conv_nodes(fp32_path):
        raise ValueError(f'{fp32_path}: the model has no Conv to quantize; INT8 here is '
                         'for conv networks such as RepVGG')
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
                weight_type=quantization.QuantType.QInt8, reduce_range=weight_bits == 7,
                calibrate_method=CALIBRATION_METHODS[method],
                nodes_to_quantize=list(only_nodes) if only_nodes is not None else None,
                nodes_to_exclude=[*output_nodes(fp32_path), *fp32_nodes],
                extra_options=dict(CalibPercentile=CALIBRATION_PERCENTILE))
    finally:
        root_logger.setLevel(level)


class Agreement(NamedTuple):
    """How two models' top-1 classes compare on the same images.

    Attributes:
        num_images: images compared.
        num_agree: images on which both predict the same class.
        reference_correct / candidate_correct: images each classifies as labelled.
        reference_only_correct / candidate_only_correct: images one of the two classifies
            as labelled and the other not (the images that make their top-1 differ).
    """
    num_images: int
    num_agree: int
    reference_correct: int
    candidate_correct: int
    reference_only_correct: int
    candidate_only_correct: int

    @property
    def rate(self) -> float:
        return self.num_agree / self.num_images

    def top1_change_interval(self, z: float = 1.96) -> 'tuple[float, float]':
        """The candidate's top-1 minus the reference's, in points, as a ``(low, high)``
        interval around the measured change (``z`` = 1.96: about 95 %): the test images
        are a sample, and only those that one model gets right and the other wrong move
        the difference (a paired comparison; the variance is McNemar's)."""
        gained, lost, count = (self.candidate_only_correct, self.reference_only_correct,
                               self.num_images)
        change = (gained - lost) / count
        deviation = math.sqrt(max(gained + lost - (gained - lost) ** 2 / count, 0)) / count
        return 100 * (change - z * deviation), 100 * (change + z * deviation)


Logits = Callable[[np.ndarray], np.ndarray]  # images (N, C, H, W) -> logits (N, classes)


def onnx_logits(path: str, int8_kernels: str = 'auto',
                num_threads: Optional[int] = None) -> Logits:
    """The logits function of an ONNX classifier run by ONNX Runtime; ``int8_kernels``
    and ``num_threads`` as for :func:`.onnx_export.onnxruntime_session`."""
    session = onnxruntime_session(path, num_threads, int8_kernels)
    name = session.get_inputs()[0].name
    return lambda images: np.asarray(session.run(None, {name: images})[0])


def top1_agreement(reference: Logits, candidate: Logits,
                   batches: Iterable[tuple]) -> Agreement:
    """Compare the top-1 classes of two classifiers (e.g. :func:`onnx_logits`) on
    ``(images, labels)`` batches (images ``(N, C, H, W)`` float32 as the model receives
    them, labels ``(N, )``)."""
    counts = np.zeros(6, dtype=np.int64)
    for images, labels in batches:
        expected, actual = (np.asarray(model(images)).argmax(axis=1)
                            for model in (reference, candidate))
        reference_right, candidate_right = expected == labels, actual == labels
        counts += [len(labels), (expected == actual).sum(), reference_right.sum(),
                   candidate_right.sum(), (reference_right & ~candidate_right).sum(),
                   (candidate_right & ~reference_right).sum()]
    if counts[0] == 0:
        raise ValueError('no images to compare the two models on')
    return Agreement(*(int(count) for count in counts))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum reference^2 / sum (reference -
    candidate)^2)`` in dB (inf when they are equal)."""
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


class LayerSensitivity(NamedTuple):
    """How much quantizing one conv alone changes the model.

    Attributes:
        node: the Conv node's name.
        position: its index among the model's convs (0: the stem).
        sqnr_db: SQNR of the logits against FP32 on the held-out images, in dB (lower:
            more sensitive).
        agreement: top-1 agreement with FP32 on them, 0..1.
    """
    node: str
    position: int
    sqnr_db: float
    agreement: float


def _logits(path: str, images: Sequence[np.ndarray]) -> np.ndarray:
    model = onnx_logits(path)
    return np.concatenate([model(batch) for batch in images])


def layer_sensitivity(fp32_path: str, calibration: Sequence[np.ndarray],
                      held_out_images: Sequence[np.ndarray], method: str = 'minmax',
                      progress: Optional[Callable[[int, int], None]] = None
                      ) -> List[LayerSensitivity]:
    """Quantize each conv of ``fp32_path`` alone and measure the logits against FP32 on
    ``held_out_images``, worst (lowest SQNR) first.

    Args:
        fp32_path: an FP32 ONNX classifier.
        calibration, method: see :func:`quantize_int8`.
        held_out_images: image batches ``(N, C, H, W)`` not used for calibration.
        progress: called with (convs done, convs) after each one.
    """
    reference = _logits(fp32_path, held_out_images)
    convs = conv_nodes(fp32_path)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for position, node in enumerate(convs):
            one_layer_path = os.path.join(workdir, f'{position}.onnx')
            quantize_int8(fp32_path, one_layer_path, calibration, method=method,
                          only_nodes=[node])
            logits = _logits(one_layer_path, held_out_images)
            rows.append(LayerSensitivity(
                node, position, sqnr_db(reference, logits),
                float(np.mean(reference.argmax(1) == logits.argmax(1)))))
            if progress is not None:
                progress(position + 1, len(convs))
    return sorted(rows, key=lambda row: (row.sqnr_db, row.position))


def check_mixed_precision(keep_fp32: int, max_drop_points: Optional[float],
                          held_out: Optional[Iterable[tuple]]) -> bool:
    """Whether a mixed-precision recipe is asked for (``keep_fp32`` convs, or within
    ``max_drop_points`` of FP32); refuses in one line one that cannot work, before any
    work.

    Raises:
        ValueError: both or a negative one given, or mixed precision without ``held_out``
            images to rank and check the convs on.
    """
    if keep_fp32 < 0 or (max_drop_points is not None and max_drop_points < 0):
        raise ValueError('keep_fp32 and max_drop_points must not be negative')
    if keep_fp32 and max_drop_points is not None:
        raise ValueError('keep_fp32 and max_drop_points both choose the FP32 convs; '
                         'pass one')
    mixed = keep_fp32 > 0 or max_drop_points is not None
    if mixed and held_out is None:
        raise ValueError('mixed precision ranks the convs on held-out images; pass some')
    return mixed


def check_keep_fp32(keep_fp32: int, fp32_path: str) -> None:
    """Refuse, in one line and before the ranking, to keep more convs FP32 than the
    ONNX file ``fp32_path`` has.

    Raises:
        ValueError: naming the model's conv count.
    """
    num_convs = len(conv_nodes(fp32_path))
    if keep_fp32 > num_convs:
        raise ValueError(f'keep_fp32 {keep_fp32}: the model has {num_convs} convs; keep '
                         f'at most {num_convs} FP32')


def fp32_convs(sensitivity: Sequence[LayerSensitivity], keep_fp32: int = 0,
               max_drop_points: Optional[float] = None,
               agreement_with: Optional[Callable[[List[str]], Agreement]] = None
               ) -> 'tuple[List[str], Optional[Agreement]]':
    """The convs mixed precision keeps FP32, most sensitive first, whatever the runtime:
    the ``keep_fp32`` worst of ``sensitivity``; or, given ``max_drop_points``, the fewest
    worst-first ones for which INT8 top-1 stays within ``max_drop_points`` of FP32 (every
    conv if need be), with the agreement reached (None for ``keep_fp32``).

    Args:
        sensitivity: from :func:`layer_sensitivity`, worst first.
        keep_fp32: how many convs to keep FP32.
        max_drop_points: largest accepted top-1 loss, in percentage points.
        agreement_with: quantizes the model with the given convs kept FP32 and compares
            it with FP32 on labelled held-out images (:func:`top1_agreement`, FP32 as
            the reference); called once per candidate, fewest FP32 convs first.
    """
    if max_drop_points is None:
        return [row.node for row in sensitivity[:keep_fp32]], None
    for keep in range(len(sensitivity) + 1):
        nodes = [row.node for row in sensitivity[:keep]]
        agreement = agreement_with(nodes)
        drop_points = 100 * (agreement.reference_correct - agreement.candidate_correct
                             ) / agreement.num_images
        if drop_points <= max_drop_points:
            break
    return nodes, agreement


def mixed_precision_nodes(fp32_path: str, calibration: Sequence[np.ndarray],
                          held_out: Sequence[tuple], sensitivity: Sequence[LayerSensitivity],
                          max_drop_points: float, method: str = 'minmax',
                          weight_bits: int = 8) -> 'tuple[List[str], Agreement]':
    """The fewest most-sensitive convs to keep FP32 for ONNX Runtime INT8 top-1 to stay
    within ``max_drop_points`` of FP32 on ``held_out`` ``(images, labels)`` batches
    (:func:`fp32_convs`), with the agreement reached.

    Args:
        fp32_path, calibration, method, weight_bits: see :func:`quantize_int8`.
        held_out: labelled batches not used for calibration.
        sensitivity: from :func:`layer_sensitivity`, worst first.
        max_drop_points: largest accepted top-1 loss, in percentage points.
    """
    with tempfile.TemporaryDirectory() as workdir:
        candidate_path = os.path.join(workdir, 'mixed.onnx')

        def agreement_with(fp32_nodes: List[str]) -> Agreement:
            quantize_int8(fp32_path, candidate_path, calibration, overwrite=True,
                          method=method, fp32_nodes=fp32_nodes, weight_bits=weight_bits)
            return top1_agreement(onnx_logits(fp32_path), onnx_logits(candidate_path),
                                  held_out)
        return fp32_convs(sensitivity, max_drop_points=max_drop_points,
                          agreement_with=agreement_with)


class Int8Report(NamedTuple):
    """What :func:`export_int8` wrote and measured.

    Attributes:
        path: absolute path of the INT8 ONNX file.
        calibration_images: images the activation ranges come from.
        method: the calibration method.
        fp32_nodes: convs kept FP32 (mixed precision), most sensitive first.
        fp32_max_relative_error: the FP32 export's error against PyTorch (see
            :func:`.onnx_export.export_onnx`).
        weights: the weight width and why (:func:`.host_cpu.int8_weight_choice`).
        agreement: INT8 against FP32 on the held-out images (None without any).
        rounding: how the weights were rounded (a key of :data:`WEIGHT_ROUNDINGS`).
    """
    path: str
    calibration_images: int
    method: str
    fp32_nodes: List[str]
    fp32_max_relative_error: float
    weights: Int8WeightChoice
    agreement: Optional[Agreement]
    rounding: str = 'nearest'


# How export_int8 rounds the weights to their grid.
WEIGHT_ROUNDINGS = {
    'nearest': "the runtime's: each weight to its nearest level",
    'adaround': 'learned per conv on the calibration images to keep its output '
                '(mmrepvgg.deploy.adaround; minutes)',
}


def export_int8(model: nn.Module, int8_path: str, calibration: List[np.ndarray],
                held_out: Optional[Iterable[tuple]] = None, overwrite: bool = False,
                progress: Optional[ProgressCallback] = None,
                opset: int = DEFAULT_OPSET, method: str = 'minmax',
                keep_fp32: int = 0, max_drop_points: Optional[float] = None,
                int8_kernels: str = 'auto', weight_bits: str = 'auto',
                rounding: str = 'nearest') -> Int8Report:
    """Export the deploy form of ``model`` to a temporary FP32 ONNX file (dynamic batch,
    the calibration images' size), quantize it to ``int8_path``, then (given
    ``held_out`` ``(images, labels)`` batches) compare the two on them.

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        int8_path, calibration, overwrite, progress, method: see :func:`quantize_int8`.
        held_out: batches not used for calibration; None skips the comparison.
        opset: ONNX opset version; per-channel QDQ needs 13 or later.
        keep_fp32: keep this many of the most sensitive convs FP32
            (:func:`layer_sensitivity` on ``held_out``).
        max_drop_points: instead, keep as few as needed for INT8 top-1 to stay within
            this many points of FP32 on ``held_out`` (:func:`mixed_precision_nodes`).
        int8_kernels: the ONNX Runtime INT8 kernels of the held-out comparison (see
            :func:`.onnx_export.onnxruntime_session`).
        weight_bits: ``'8'``, ``'7'`` or ``'auto'`` (7 on x86 CPUs without VNNI, see
            :func:`.host_cpu.int8_weight_choice`).
        rounding: a key of :data:`WEIGHT_ROUNDINGS`. With ``'adaround'`` the file is
            quantized from the model with learned-rounding weights, which lie on the
            INT8 grid; the FP32 side of the comparison (and of the sensitivity ranking)
            stays ``model``. Convs kept FP32 by mixed precision hold the rounded weights.

    Raises:
        FileExistsError: ``int8_path`` exists and ``overwrite`` is False (checked before
            any work).
        ValueError: a mixed-precision recipe that cannot work
            (:func:`check_mixed_precision`, :func:`check_keep_fp32`); see also
            :func:`quantize_int8`.
    """
    if os.path.exists(int8_path) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(int8_path)} exists; pass --force '
                              '(overwrite=True) to replace it')
    if rounding not in WEIGHT_ROUNDINGS:
        raise ValueError(f'rounding={rounding!r}: choose from {", ".join(WEIGHT_ROUNDINGS)}')
    weights = int8_weight_choice(host_cpu(), weight_bits)
    mixed = check_mixed_precision(keep_fp32, max_drop_points, held_out)
    check_calibration(method, CALIBRATION_METHODS, calibration, 'ONNX Runtime')
    held_out = None if held_out is None else list(held_out)
    fp32_nodes: List[str] = []
    with tempfile.TemporaryDirectory() as workdir:
        input_shape = (1, *calibration[0].shape[1:])
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'), input_shape,
                           dynamic_batch=True, opset=opset)
        quantized_path = fp32.path
        if rounding == 'adaround':
            quantized_path = export_onnx(
                adaround(model, calibration, weights.bits),
                os.path.join(workdir, 'rounded.onnx'), input_shape, dynamic_batch=True,
                opset=opset).path
        if mixed:
            check_keep_fp32(keep_fp32, fp32.path)
            sensitivity = layer_sensitivity(fp32.path, calibration,
                                            [images for images, _ in held_out], method)
            if max_drop_points is not None:
                fp32_nodes, _ = mixed_precision_nodes(fp32.path, calibration, held_out,
                                                      sensitivity, max_drop_points, method,
                                                      weights.bits)
            else:
                fp32_nodes, _ = fp32_convs(sensitivity, keep_fp32)
        quantize_int8(quantized_path, int8_path, calibration, overwrite, progress, method,
                      fp32_nodes, weight_bits=weights.bits)
        agreement = (None if held_out is None else top1_agreement(
            onnx_logits(fp32.path), onnx_logits(int8_path, int8_kernels), held_out))
    return Int8Report(os.path.abspath(int8_path), sum(len(batch) for batch in calibration),
                      method, fp32_nodes, fp32.max_relative_error, weights, agreement,
                      rounding)

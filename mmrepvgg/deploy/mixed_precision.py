"""Mixed precision: which convs to keep FP32 in an INT8 model, whatever the runtime, and
the top-1 comparison of two classifiers it (and every INT8 export) is judged by.

:func:`layer_sensitivity` quantizes one conv at a time and measures how far the logits move
(SQNR against FP32); :func:`fp32_convs` keeps the worst ones FP32, a given number of them
or as few as keep top-1 within a bound (:func:`mixed_precision_nodes` on ONNX Runtime).
"""
import math
import os
import tempfile
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np

from .onnx_runtime import OnnxRuntimeModel
from .qdq import conv_nodes, quantize_int8


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


# images (N, C, H, W) -> logits (N, classes), e.g. an OnnxRuntimeModel
Logits = Callable[[np.ndarray], np.ndarray]


def top1_agreement(reference: Logits, candidate: Logits,
                   batches: Iterable[tuple]) -> Agreement:
    """Compare the top-1 classes of two classifiers (e.g. an
    :class:`.onnx_runtime.OnnxRuntimeModel`) on
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
    model = OnnxRuntimeModel(path)
    return np.concatenate([model(batch) for batch in images])


def layer_sensitivity(fp32_path: str, calibration: Sequence[np.ndarray],
                      held_out_images: Sequence[np.ndarray], method: str = 'minmax',
                      progress: Optional[Callable[[int, int], None]] = None
                      ) -> List[LayerSensitivity]:
    """Quantize each conv of ``fp32_path`` alone and measure the logits against FP32 on
    ``held_out_images``, worst (lowest SQNR) first.

    Args:
        fp32_path: an FP32 ONNX classifier.
        calibration, method: see :func:`.qdq.quantize_int8`.
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
        fp32_path, calibration, method, weight_bits: see :func:`.qdq.quantize_int8`.
        held_out: labelled batches not used for calibration.
        sensitivity: from :func:`layer_sensitivity`, worst first.
        max_drop_points: largest accepted top-1 loss, in percentage points.
    """
    with tempfile.TemporaryDirectory() as workdir:
        candidate_path = os.path.join(workdir, 'mixed.onnx')

        def agreement_with(fp32_nodes: List[str]) -> Agreement:
            quantize_int8(fp32_path, candidate_path, calibration, overwrite=True,
                          method=method, fp32_nodes=fp32_nodes, weight_bits=weight_bits)
            return top1_agreement(OnnxRuntimeModel(fp32_path),
                                  OnnxRuntimeModel(candidate_path), held_out)
        return fp32_convs(sensitivity, max_drop_points=max_drop_points,
                          agreement_with=agreement_with)

"""Mixed precision: which convs to keep FP32 in an INT8 model, whatever the runtime, and
the top-1 comparison of two classifiers it (and every INT8 export) is judged by.

:func:`layer_sensitivity` quantizes one conv at a time and measures how far the logits move
(SQNR against FP32); :func:`choose_fp32_convs` keeps the worst ones FP32, a given number of
them or as few as keep top-1 within a bound.
"""
import math
import os
import tempfile
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np

from .onnx_runtime import OnnxRuntimeModel
from ._qdq import conv_nodes, quantize_int8


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


def choose_fp32_convs(fp32_path: str, calibration: Sequence[np.ndarray],
                      held_out: Sequence[tuple], recipe,
                      quantized: Callable[[List[str]], Logits],
                      sensitivity: Optional[Sequence[LayerSensitivity]] = None) -> List[str]:
    """The convs of an FP32 ONNX classifier that mixed precision keeps FP32, most
    sensitive first, whatever the runtime: the ``recipe.keep_fp32`` worst; or, given
    ``recipe.max_drop_points``, the fewest worst-first ones for which INT8 top-1 on
    ``held_out`` stays within that many points of ONNX Runtime FP32 (every conv if need
    be): what is deployed is measured, not the ranking's one-conv files.

    Args:
        fp32_path: the FP32 ONNX file.
        calibration: see :func:`.qdq.quantize_int8`.
        held_out: labelled ``(images, labels)`` batches not used for calibration; the
            convs are ranked (:func:`layer_sensitivity`) and checked on them.
        recipe: an :class:`.quantization.Int8Recipe` (its ``keep_fp32``,
            ``max_drop_points`` and ``calibration_method``).
        quantized: the runtime's INT8 model with the given convs kept FP32, as a logits
            function; called once per candidate, fewest FP32 convs first.
        sensitivity: that ranking when the caller already has it (same file,
            calibration, images and method); None computes it.

    Raises:
        ValueError: ``keep_fp32`` is more than the model's convs (before the ranking).
    """
    num_convs = len(conv_nodes(fp32_path))
    if recipe.keep_fp32 > num_convs:
        raise ValueError(f'keep_fp32 {recipe.keep_fp32}: the model has {num_convs} convs; '
                         f'keep at most {num_convs} FP32')
    if sensitivity is None:
        sensitivity = layer_sensitivity(fp32_path, calibration,
                                        [images for images, _ in held_out],
                                        recipe.calibration_method)
    worst_first = [row.node for row in sensitivity]
    if recipe.max_drop_points is None:
        return worst_first[:recipe.keep_fp32]
    reference = OnnxRuntimeModel(fp32_path)
    for keep in range(len(worst_first) + 1):
        agreement = top1_agreement(reference, quantized(worst_first[:keep]), held_out)
        drop_points = 100 * (agreement.reference_correct - agreement.candidate_correct
                             ) / agreement.num_images
        if drop_points <= recipe.max_drop_points:
            break
    return worst_first[:keep]

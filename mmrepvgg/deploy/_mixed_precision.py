"""Mixed precision: which convs to keep FP32 in an INT8 model, whatever the runtime; and
:func:`agreement`, the comparison every INT8 export is judged by (top-1, or mIoU)."""
import math
import os
import tempfile
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from .onnx_runtime import OnnxRuntimeModel
from ._qdq import conv_nodes, quantize_int8


class Agreement(NamedTuple):
    """How two classifiers' top-1 classes compare on the same images (image counts)."""
    num_images: int
    num_agree: int
    reference_correct: int
    candidate_correct: int
    reference_only_correct: int
    candidate_only_correct: int

    @property
    def rate(self) -> float:
        return self.num_agree / self.num_images

    @property
    def drop_points(self) -> float:
        """Reference top-1 minus candidate top-1, in points."""
        return 100 * (self.reference_correct - self.candidate_correct) / self.num_images

    def top1_change_interval(self, z: float = 1.96) -> 'tuple[float, float]':
        """Candidate minus reference top-1 in points, a ``(low, high)`` interval (``z`` 1.96:
        95 %), paired: McNemar's variance, from the images only one model gets right."""
        gained, lost, count = (self.candidate_only_correct, self.reference_only_correct,
                               self.num_images)
        change = (gained - lost) / count
        deviation = math.sqrt(max(gained + lost - (gained - lost) ** 2 / count, 0)) / count
        return 100 * (change - z * deviation), 100 * (change + z * deviation)

    def describe_change(self) -> str:
        low, high = self.top1_change_interval()
        return (f'top-1 change {0.0 - self.drop_points:+.2f} points (95 % interval '
                f'{low:+.2f} to {high:+.2f}), agreement {100 * self.rate:.2f} % on '
                f'{self.num_images} held-out images')  # 0.0 -: no '-0.00'

    def describe(self, reference: str, candidate: str) -> str:
        """One line: agreement and both top-1, ``reference`` and ``candidate`` naming them."""
        def top1(correct: int) -> str:
            return f'{100 * correct / self.num_images:.2f} %'
        return (f'{candidate} vs {reference} top-1 agreement on {self.num_images} held-out '
                f'test images: {100 * self.rate:.2f} % ({self.num_agree}/{self.num_images}); '
                f'top-1 {reference} {top1(self.reference_correct)}, {candidate} '
                f'{top1(self.candidate_correct)}')


class MiouAgreement(NamedTuple):
    """How two segmentors' class maps compare on the pixels not labelled ``IGNORE_INDEX``."""
    num_images: int
    num_pixels: int
    num_agree: int
    reference_counts: np.ndarray  # (num_classes, 2): per class, (intersection, union)
    candidate_counts: np.ndarray

    @property
    def rate(self) -> float:
        return self.num_agree / self.num_pixels

    reference_miou = property(lambda self: _miou_points(self.reference_counts))
    candidate_miou = property(lambda self: _miou_points(self.candidate_counts))

    @property
    def drop_points(self) -> float:
        """Reference mIoU minus candidate mIoU, in points."""
        return self.reference_miou - self.candidate_miou

    def describe_change(self) -> str:
        return (f'mIoU change {0.0 - self.drop_points:+.2f} points, pixel agreement '
                f'{100 * self.rate:.2f} % on {self.num_images} held-out images')

    def describe(self, reference: str, candidate: str) -> str:
        """One line: both mIoU and the pixel agreement, ``reference`` and ``candidate``
        naming them."""
        return (f'{candidate} vs {reference} on {self.num_images} held-out test images: mIoU '
                f'{reference} {self.reference_miou:.2f} %, {candidate} '
                f'{self.candidate_miou:.2f} % (change {0.0 - self.drop_points:+.2f} points); '
                f'pixel agreement {100 * self.rate:.2f} %')


# The label of pixels no metric counts (mmseg's default ignore_index).
IGNORE_INDEX = 255


def _miou_points(counts: np.ndarray) -> float:
    """Mean IoU over the classes present (union > 0), in points, as mmseg's IoUMetric."""
    present = counts[:, 1] > 0
    return float(100 * np.mean(counts[present, 0] / counts[present, 1]))


# images (N, C, H, W) -> logits (N, classes) or (N, classes, H, W), e.g. an OnnxRuntimeModel
Logits = Callable[[np.ndarray], np.ndarray]


def _top1_agreement(reference: Logits, candidate: Logits,
                    batches: Iterable[tuple]) -> Agreement:
    """Compare two classifiers on ``(images, labels)`` batches, labels ``(N, )``."""
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


def _miou_agreement(reference: Logits, candidate: Logits,
                    batches: Iterable[tuple]) -> MiouAgreement:
    """Compare two segmentors on ``(images, label maps)`` batches, maps ``(N, H, W)``."""
    num_images = num_pixels = num_agree = 0
    counts = None  # (model, class, (intersection, union))
    for images, labels in batches:
        expected, actual = (np.asarray(model(images)) for model in (reference, candidate))
        if counts is None:
            counts = np.zeros((2, expected.shape[1], 2), np.int64)
        expected, actual = expected.argmax(axis=1), actual.argmax(axis=1)
        labelled = labels != IGNORE_INDEX
        truth = labels[labelled]
        for model_counts, classes in zip(counts, (expected[labelled], actual[labelled])):
            hits, predicted, labelled_pixels = (
                np.bincount(values, minlength=len(model_counts))
                for values in (truth[classes == truth], classes, truth))
            model_counts += np.stack([hits, predicted + labelled_pixels - hits], axis=1)
        num_images, num_pixels = num_images + len(labels), num_pixels + int(labelled.sum())
        num_agree += int((expected == actual)[labelled].sum())
    if num_pixels == 0:
        raise ValueError('no labelled pixels to compare the two models on')
    return MiouAgreement(num_images, num_pixels, num_agree, counts[0], counts[1])


def agreement(reference: Logits, candidate: Logits,
              batches: Iterable[tuple]) -> Union[Agreement, MiouAgreement]:
    """Compare two models on ``(images, labels)`` batches (images ``(N, C, H, W)`` float32):
    top-1 for labels ``(N, )``, mIoU for label maps ``(N, H, W)``."""
    batches = list(batches)
    classifier = not batches or np.ndim(batches[0][1]) == 1
    return (_top1_agreement if classifier else _miou_agreement)(reference, candidate, batches)


def _signal_and_noise(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """``[sum reference^2, sum (reference - candidate)^2]``, float64."""
    reference = reference.astype(np.float64)
    return np.array([np.sum(reference ** 2), np.sum((reference - candidate) ** 2)])


def _decibels(signal_and_noise: np.ndarray) -> float:
    signal, noise = signal_and_noise
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum reference^2 / sum (reference -
    candidate)^2)`` in dB (inf when they are equal)."""
    return _decibels(_signal_and_noise(reference, candidate))


class LayerSensitivity(NamedTuple):
    """How much quantizing one conv alone changes the logits on the held-out images."""
    node: str
    position: int  # among the model's convs, 0: the stem
    sqnr_db: float  # against FP32; lower: more sensitive
    agreement: float  # arg-max agreement with FP32, 0..1, per image or per pixel


def layer_sensitivity(fp32_path: str, calibration: Sequence[np.ndarray],
                      held_out_images: Sequence[np.ndarray], method: str = 'minmax'
                      ) -> List[LayerSensitivity]:
    """Quantize each conv of the FP32 ONNX file ``fp32_path`` alone and measure the logits
    against FP32 on ``held_out_images`` ``(N, C, H, W)`` batches, worst (lowest SQNR) first.
    Holds one batch's logits at a time (a segmentor's are large): FP32 runs again per conv."""
    reference = OnnxRuntimeModel(fp32_path)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for position, node in enumerate(conv_nodes(fp32_path)):
            one_layer_path = os.path.join(workdir, f'{position}.onnx')
            quantize_int8(fp32_path, one_layer_path, calibration, method=method,
                          only_nodes=[node])
            one_layer = OnnxRuntimeModel(one_layer_path)
            signal_and_noise, num_agree, num_compared = np.zeros(2), 0, 0
            for images in held_out_images:
                expected, actual = reference(images), one_layer(images)
                signal_and_noise += _signal_and_noise(expected, actual)
                expected_classes = expected.argmax(1)
                num_agree += int(np.sum(expected_classes == actual.argmax(1)))
                num_compared += expected_classes.size
            rows.append(LayerSensitivity(node, position, _decibels(signal_and_noise),
                                         num_agree / num_compared))
    return sorted(rows, key=lambda row: (row.sqnr_db, row.position))


def choose_fp32_convs(fp32_path: str, calibration: Sequence[np.ndarray],
                      held_out: Sequence[tuple], recipe,
                      quantized: Callable[[List[str]], Logits],
                      sensitivity: Optional[Sequence[LayerSensitivity]] = None) -> List[str]:
    """The convs of the FP32 ONNX file ``fp32_path`` that mixed precision keeps FP32, most
    sensitive first (:func:`layer_sensitivity` on ``held_out``, unless ``sensitivity``
    holds it): the ``recipe.keep_fp32`` worst; or the fewest worst-first ones for which
    ``quantized(fp32_nodes)`` stays within ``recipe.max_drop_points`` of ONNX Runtime FP32
    on ``held_out``. ValueError (before the ranking): ``keep_fp32`` past the model's convs."""
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
        if agreement(reference, quantized(worst_first[:keep]),
                     held_out).drop_points <= recipe.max_drop_points:
            break
    return worst_first[:keep]

"""INT8 export: the deploy form of a model as a static INT8 ONNX file for ONNX Runtime,
calibrated on real, preprocessed images (:mod:`._qdq`) and checked against the FP32 file
on held-out images; how, beyond that default, is one :class:`Int8Recipe`.

The recipe's defaults are the automatic per-CPU choice (:mod:`._host_cpu`: 7-bit weights on
x86 CPUs without VNNI, the INT8 kernels accurate for the file's weights). What it can add:
another calibration method, mixed precision (:mod:`._mixed_precision`: the convs most
sensitive to INT8 kept FP32) and learned rounding of the weights (:mod:`._adaround`).
"""
import dataclasses
import os
import tempfile
from typing import Iterable, List, NamedTuple, Optional

import numpy as np
from torch import nn

from ._adaround import adaround
from ._host_cpu import INT8_KERNELS, INT8_WEIGHT_MAX, Int8WeightChoice, host_cpu, int8_weight_choice
from ._mixed_precision import Agreement, choose_fp32_convs, top1_agreement
from .onnx_export import DEFAULT_OPSET, export_onnx
from .onnx_runtime import OnnxRuntimeModel
from ._qdq import CALIBRATION_METHODS, ProgressCallback, check_calibration, quantize_int8

# How export_int8 rounds the weights to their grid.
WEIGHT_ROUNDINGS = {
    'nearest': "the runtime's: each weight to its nearest level",
    'adaround': 'learned per conv on the calibration images to keep its output '
                '(mmrepvgg.deploy._adaround; minutes)',
}
# Per-channel QDQ needs this opset or later.
MIN_INT8_OPSET = 13


def _choose(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f'INT8 recipe {key}={value!r}: choose one of '
                         f'{", ".join(map(str, choices))}')


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """How :func:`export_int8` quantizes, beyond the automatic per-CPU choice (the
    defaults). Checked when made: a bad value raises ``ValueError`` naming the choices.

    Attributes:
        calibration_method: how an activation's range is drawn from the calibration
            images, a key of :data:`.qdq.CALIBRATION_METHODS` (OpenVINO: minmax or
            percentile).
        keep_fp32: mixed precision: keep this many of the convs most sensitive to INT8
            FP32 (ranked on the held-out images).
        max_drop_points: mixed precision instead: keep as few as needed for INT8 top-1
            to stay within this many points of FP32 on the held-out images.
        weight_bits: ``'auto'`` (7 on x86 CPUs without VNNI, see
            :func:`.host_cpu.int8_weight_choice`), ``'8'`` or ``'7'``; ONNX Runtime only.
        rounding: a key of :data:`WEIGHT_ROUNDINGS`; ONNX Runtime only.
        int8_kernels: the ONNX Runtime INT8 kernels of the held-out comparison
            (``'auto'``, ``'u8s8'`` or ``'u8u8'``, see :class:`.onnx_runtime.OnnxRuntimeModel`).
        opset: ONNX opset version of the export (INT8: 13 or later).
        progress: called with (batch done, batches, images so far) after each
            calibration batch; not part of the recipe's identity.
    """
    calibration_method: str = 'minmax'
    keep_fp32: int = 0
    max_drop_points: Optional[float] = None
    weight_bits: str = 'auto'
    rounding: str = 'nearest'
    int8_kernels: str = 'auto'
    opset: int = DEFAULT_OPSET
    progress: Optional[ProgressCallback] = dataclasses.field(default=None, compare=False,
                                                             repr=False)

    def __post_init__(self):
        _choose('calibration_method', self.calibration_method, tuple(CALIBRATION_METHODS))
        object.__setattr__(self, 'weight_bits', str(self.weight_bits))
        _choose('weight_bits', self.weight_bits, ('auto', *map(str, INT8_WEIGHT_MAX)))
        _choose('rounding', self.rounding, tuple(WEIGHT_ROUNDINGS))
        _choose('int8_kernels', self.int8_kernels, ('auto', *INT8_KERNELS))
        if isinstance(self.keep_fp32, bool) or not isinstance(self.keep_fp32, int):
            raise ValueError(f'INT8 recipe keep_fp32={self.keep_fp32!r}: pass a number '
                             'of convs')
        if self.max_drop_points is not None:
            if isinstance(self.max_drop_points, bool) or not isinstance(
                    self.max_drop_points, (int, float)):
                raise ValueError(f'INT8 recipe max_drop_points={self.max_drop_points!r}: '
                                 'pass a number of top-1 points')
            object.__setattr__(self, 'max_drop_points', float(self.max_drop_points))
        if self.keep_fp32 < 0 or (self.max_drop_points or 0) < 0:
            raise ValueError('INT8 recipe keep_fp32 and max_drop_points must not be negative')
        if self.keep_fp32 and self.max_drop_points is not None:
            raise ValueError('INT8 recipe keep_fp32 and max_drop_points both choose the '
                             'FP32 convs; pass one')

    def mixed_precision(self, held_out: Optional[Iterable[tuple]]) -> bool:
        """Whether some convs stay FP32; refuses in one line mixed precision without
        ``held_out`` batches to rank and check the convs on."""
        mixed = self.keep_fp32 > 0 or self.max_drop_points is not None
        if mixed and held_out is None:
            raise ValueError('mixed precision ranks the convs on held-out images; pass some')
        return mixed

    @classmethod
    def from_options(cls, options: Optional[dict], **settings) -> 'Int8Recipe':
        """The recipe of ``options`` ``{field: value}`` (what ``--int8-recipe KEY=VALUE``
        parses to) and ``settings`` (fields the caller sets itself, e.g. ``opset``,
        ``progress``).

        Raises:
            ValueError: a key that is no settable field (naming the valid ones), or a
                bad value.
        """
        keys = [field.name for field in dataclasses.fields(cls) if field.name not in settings
                and field.name != 'progress']
        unknown = sorted(set(options or {}) - set(keys))
        if unknown:
            raise ValueError(f'unknown INT8 recipe key {", ".join(unknown)}; valid keys: '
                             f'{", ".join(keys)}')
        return cls(**(options or {}), **settings)


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


def export_int8(model: nn.Module, int8_path: str, calibration: List[np.ndarray],
                held_out: Optional[Iterable[tuple]] = None,
                recipe: Optional[Int8Recipe] = None, overwrite: bool = False) -> Int8Report:
    """Export the deploy form of ``model`` to a temporary FP32 ONNX file (dynamic batch,
    the calibration images' size), quantize it to ``int8_path`` as ``recipe`` says, then
    (given ``held_out`` ``(images, labels)`` batches) compare the two on them.

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        int8_path: the file to write, atomically (an interrupted or failed run leaves it
            as it was).
        calibration: preprocessed image batches ``(N, C, H, W)`` float32, as the model
            receives them; the activation ranges come from them.
        held_out: labelled batches not used for calibration; None skips the comparison.
            Mixed precision ranks and checks the convs on them.
        recipe: how to quantize (default: :class:`Int8Recipe`'s automatic choice). With
            ``rounding='adaround'`` the file is quantized from the model with
            learned-rounding weights, which lie on the INT8 grid; the FP32 side of the
            comparison (and of the sensitivity ranking) stays ``model``. Convs kept FP32
            by mixed precision hold the rounded weights.
        overwrite: replace an existing ``int8_path``.

    Raises:
        FileExistsError: ``int8_path`` exists and ``overwrite`` is False (checked before
            any work).
        ValueError: an opset before 13, no calibration images, a model without a conv,
            or mixed precision that cannot work (without ``held_out``, more convs than
            the model has); all but the last checked before any work.
    """
    recipe = recipe or Int8Recipe()
    if os.path.exists(int8_path) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(int8_path)} exists; pass --force '
                              '(overwrite=True) to replace it')
    if recipe.opset < MIN_INT8_OPSET:
        raise ValueError(f'opset {recipe.opset}: per-channel INT8 needs opset '
                         f'{MIN_INT8_OPSET} or later')
    weights = int8_weight_choice(host_cpu(), recipe.weight_bits)
    method = recipe.calibration_method
    mixed = recipe.mixed_precision(held_out)
    check_calibration(method, CALIBRATION_METHODS, calibration, 'ONNX Runtime')
    held_out = None if held_out is None else list(held_out)
    fp32_nodes: List[str] = []
    with tempfile.TemporaryDirectory() as workdir:
        input_shape = (1, *calibration[0].shape[1:])
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'), input_shape,
                           dynamic_batch=True, opset=recipe.opset)
        quantized_path = fp32.path
        if recipe.rounding == 'adaround':
            quantized_path = export_onnx(
                adaround(model, calibration, weights.bits),
                os.path.join(workdir, 'rounded.onnx'), input_shape, dynamic_batch=True,
                opset=recipe.opset).path
        if mixed:
            def quantized(fp32_nodes: List[str]) -> OnnxRuntimeModel:
                candidate_path = os.path.join(workdir, 'mixed.onnx')
                quantize_int8(fp32.path, candidate_path, calibration, True, None, method,
                              fp32_nodes, weight_bits=weights.bits)
                return OnnxRuntimeModel(candidate_path)
            fp32_nodes = choose_fp32_convs(fp32.path, calibration, held_out, recipe,
                                           quantized)
        quantize_int8(quantized_path, int8_path, calibration, overwrite, recipe.progress,
                      method, fp32_nodes, weight_bits=weights.bits)
        agreement = (None if held_out is None else top1_agreement(
            OnnxRuntimeModel(fp32.path), OnnxRuntimeModel(int8_path, None, recipe.int8_kernels),
            held_out))
    return Int8Report(os.path.abspath(int8_path), sum(len(batch) for batch in calibration),
                      method, fp32_nodes, fp32.max_relative_error, weights, agreement,
                      recipe.rounding)

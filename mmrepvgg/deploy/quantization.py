"""INT8 export of a deploy model (a classifier, or a segmentor in
:class:`mmrepvgg.dense.segmentation.SegmentationLogits`) as a static INT8 ONNX file for ONNX
Runtime, accuracy-bounded by default (docs/deployment.md)."""
import dataclasses
import os
import shutil
import tempfile
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
from torch import nn

from ..checkpoint import atomic_output
from ._equalization import equalize_model
from ._host_cpu import INT8_KERNELS, INT8_WEIGHT_MAX, Int8WeightChoice, host_cpu, int8_weight_choice
from ._mixed_precision import Agreement, MiouAgreement, agreement, choose_fp32_convs
from .onnx_export import DEFAULT_OPSET, export_onnx
from .onnx_runtime import OnnxRuntimeModel
from ._qdq import CALIBRATION_METHODS, ProgressCallback, check_calibration, quantize_int8

# Per-channel QDQ needs this opset or later.
MIN_INT8_OPSET = 13


def _choose(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f'INT8 recipe {key}={value!r}: choose one of '
                         f'{", ".join(map(str, choices))}')


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """How :func:`export_int8` quantizes, beyond the automatic per-CPU choice (the
    defaults; docs/deployment.md's table). A bad value raises ``ValueError`` naming the
    choices. ``keep_fp32`` or ``max_drop_points``: mixed precision, convs ranked on the
    held-out images; points: of top-1 (or mIoU) against FP32 on them."""
    calibration_method: str = 'minmax'  # a key of _qdq.CALIBRATION_METHODS
    keep_fp32: int = 0  # this many of the convs most sensitive to INT8 stay FP32
    max_drop_points: Optional[float] = None  # as few FP32 convs as keep INT8 within this
    weight_bits: str = 'auto'  # '8', '7' or 'auto': _host_cpu.int8_weight_choice
    int8_kernels: str = 'auto'  # ONNX Runtime's in the held-out comparison
    opset: int = DEFAULT_OPSET
    accuracy_bound_points: Optional[float] = 1.0  # None: the recipe as given, no steps
    # Called with (batch done, batches, images so far); not part of the recipe's identity.
    progress: Optional[ProgressCallback] = dataclasses.field(default=None, compare=False,
                                                             repr=False)

    def __post_init__(self):
        _choose('calibration_method', self.calibration_method, tuple(CALIBRATION_METHODS))
        object.__setattr__(self, 'weight_bits', str(self.weight_bits))
        _choose('weight_bits', self.weight_bits, ('auto', *map(str, INT8_WEIGHT_MAX)))
        _choose('int8_kernels', self.int8_kernels, ('auto', *INT8_KERNELS))
        if isinstance(self.keep_fp32, bool) or not isinstance(self.keep_fp32, int):
            raise ValueError(f'INT8 recipe keep_fp32={self.keep_fp32!r}: pass a number '
                             'of convs')
        for key in ('max_drop_points', 'accuracy_bound_points'):
            points = getattr(self, key)
            if points is None:
                continue
            if isinstance(points, bool) or not isinstance(points, (int, float)):
                raise ValueError(f'INT8 recipe {key}={points!r}: pass a number of points')
            object.__setattr__(self, key, float(points))
        if min(self.keep_fp32, self.max_drop_points or 0,
               self.accuracy_bound_points or 0) < 0:
            raise ValueError('INT8 recipe keep_fp32, max_drop_points and '
                             'accuracy_bound_points must not be negative')
        if self.keep_fp32 and self.max_drop_points is not None:
            raise ValueError('INT8 recipe keep_fp32 and max_drop_points both choose the '
                             'FP32 convs; pass one')

    def mixed_precision(self, held_out: Optional[Iterable[tuple]]) -> bool:
        """Whether some convs stay FP32; ValueError without ``held_out`` to rank them on."""
        mixed = self.keep_fp32 > 0 or self.max_drop_points is not None
        if mixed and held_out is None:
            raise ValueError('mixed precision ranks the convs on held-out images; pass some')
        return mixed

    @classmethod
    def from_options(cls, options: Optional[dict], **settings) -> 'Int8Recipe':
        """The recipe of ``options`` ``{field: value}`` (``--int8-recipe KEY=VALUE``;
        ``'none'``, in any case, is None) and the caller's own ``settings`` (e.g. opset);
        ``ValueError`` for a key that is no settable field (naming them) or a bad value."""
        keys = [field.name for field in dataclasses.fields(cls) if field.name not in settings
                and field.name != 'progress']
        unknown = sorted(set(options or {}) - set(keys))
        if unknown:
            raise ValueError(f'unknown INT8 recipe key {", ".join(unknown)}; valid keys: '
                             f'{", ".join(keys)}')
        options = {key: None if isinstance(value, str) and value.lower() == 'none' else value
                   for key, value in (options or {}).items()}
        return cls(**options, **settings)


class Int8Report(NamedTuple):
    """What :func:`export_int8` wrote and measured."""
    path: str  # absolute
    calibration_images: int
    method: str
    fp32_nodes: List[str]  # the convs kept FP32, most sensitive first
    fp32_max_relative_error: float
    weights: Int8WeightChoice
    agreement: Union[Agreement, MiouAgreement, None]  # INT8 vs FP32 on the held-out images
    steps: Tuple[str, ...] = ()  # the recipe steps added, in order
    bound_points: Optional[float] = None  # None: not checked
    cpu: str = ''

    def describe_outcome(self) -> str:
        """One line: the recipe chosen and how it met (or missed) the accuracy bound."""
        recipe = 'INT8 recipe: ' + ' + '.join((f'{self.method} calibration', *self.steps))
        if self.agreement is None:
            return f'{recipe}; accuracy not checked (no held-out images)'
        measured = f'{recipe}; {self.agreement.describe_change()}'
        if self.bound_points is None:
            return measured
        if self.agreement.drop_points <= self.bound_points:
            return f'{measured}: within the {self.bound_points:g}-point bound'
        return (f'{measured}: past the {self.bound_points:g}-point bound after every recipe '
                'step (pass --int8-recipe keep_fp32=N to keep more convs FP32)')


def _recipe_ladder(model: nn.Module, fp32_path: str, workdir: str,
                   calibration: List[np.ndarray], held_out: Optional[List[tuple]],
                   recipe: Int8Recipe, weight_bits: int
                   ) -> Iterator[Tuple[str, List[str], Tuple[str, ...]]]:
    """``(INT8 file, convs kept FP32, steps added)`` of the user's recipe, then with each
    step added, cheapest first: equalization (exact, a second); FP32 fallback (INT8 speed
    lost), unless the recipe chose its own FP32 convs."""
    def quantized(source_path: str, fp32_nodes: List[str], name: str) -> str:
        int8_path = os.path.join(workdir, f'{name}_int8.onnx')
        quantize_int8(source_path, int8_path, calibration, True, recipe.progress,
                      recipe.calibration_method, fp32_nodes, weight_bits=weight_bits)
        return int8_path

    def fp32_convs(source_path: str, convs_recipe: Int8Recipe) -> List[str]:
        def candidate(fp32_nodes: List[str]) -> OnnxRuntimeModel:
            return OnnxRuntimeModel(quantized(source_path, fp32_nodes, 'mixed'))
        return choose_fp32_convs(source_path, calibration, held_out, convs_recipe, candidate)

    mixed = recipe.mixed_precision(held_out)
    fp32_nodes = fp32_convs(fp32_path, recipe) if mixed else []
    yield quantized(fp32_path, fp32_nodes, 'recipe'), fp32_nodes, ()
    equalized, _ = equalize_model(model)
    steps = ('cross-layer equalization', )
    source_path = export_onnx(equalized, os.path.join(workdir, 'equalized_fp32.onnx'),
                              (1, *calibration[0].shape[1:]), dynamic_batch=True,
                              opset=recipe.opset).path
    yield quantized(source_path, fp32_nodes, 'equalized'), fp32_nodes, steps
    if mixed:
        return
    fp32_nodes = fp32_convs(source_path, dataclasses.replace(
        recipe, max_drop_points=recipe.accuracy_bound_points))
    steps += (f'FP32 fallback of the most sensitive {len(fp32_nodes)} conv(s)', )
    yield quantized(source_path, fp32_nodes, 'fallback'), fp32_nodes, steps


def export_int8(model: nn.Module, int8_path: str, calibration: List[np.ndarray],
                held_out: Optional[Iterable[tuple]] = None,
                recipe: Optional[Int8Recipe] = None, overwrite: bool = False) -> Int8Report:
    """Export the deploy form of ``model`` (not changed; logits ``(N, classes)`` or ``(N,
    classes, H, W)``) and quantize it to ``int8_path`` (atomically) as ``recipe`` says,
    calibrated on batches ``(N, C, H, W)`` float32 as the model receives them; given
    ``held_out`` ``(images, labels)`` batches (labels ``(N, )``: top-1; label maps ``(N, H,
    W)``: mIoU), while INT8 is more than ``recipe.accuracy_bound_points`` below FP32 on
    them, quantize again with cross-layer equalization, then FP32 fallback, added. The file
    written is the last one tried. Raises FileExistsError, or ValueError (all but the last
    before any work) for an opset before 13, no calibration images, mixed precision without
    ``held_out``, a model without a conv, or more FP32 convs than it has."""
    recipe = recipe or Int8Recipe()
    if os.path.exists(int8_path) and not overwrite:
        raise FileExistsError(f'{os.path.abspath(int8_path)} exists; pass --force '
                              '(overwrite=True) to replace it')
    if recipe.opset < MIN_INT8_OPSET:
        raise ValueError(f'opset {recipe.opset}: per-channel INT8 needs opset '
                         f'{MIN_INT8_OPSET} or later')
    cpu = host_cpu()
    weights = int8_weight_choice(cpu, recipe.weight_bits)
    recipe.mixed_precision(held_out)
    check_calibration(recipe.calibration_method, CALIBRATION_METHODS, calibration,
                      'ONNX Runtime')
    held_out = None if held_out is None else list(held_out)
    bound = None if held_out is None else recipe.accuracy_bound_points
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'),
                           (1, *calibration[0].shape[1:]), dynamic_batch=True,
                           opset=recipe.opset)
        for candidate_path, fp32_nodes, steps in _recipe_ladder(
                model, fp32.path, workdir, calibration, held_out, recipe, weights.bits):
            measured = None if held_out is None else agreement(
                OnnxRuntimeModel(fp32.path),
                OnnxRuntimeModel(candidate_path, None, recipe.int8_kernels), held_out)
            if bound is None or measured.drop_points <= bound:
                break
        with atomic_output(int8_path, overwrite) as partial_path:
            shutil.copyfile(candidate_path, partial_path)
    return Int8Report(os.path.abspath(int8_path), sum(len(batch) for batch in calibration),
                      recipe.calibration_method, list(fp32_nodes), fp32.max_relative_error,
                      weights, measured, steps, bound, cpu.describe())

"""OpenVINO as a second CPU runtime: :class:`OpenVINOModel`, and the deploy model as an IR
(``.xml`` + ``.bin``), FP32 or INT8 by NNCF, from the verified ONNX export (docs/int8.md).
What is not quantized stays f32 (saved and run so), to keep the comparison honest."""
import contextlib
import ctypes
import os
import sys
import tempfile
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import atomic_output, check_output
from .._compat import require_nncf
from .._utils import require
from ._mixed_precision import Agreement, LayerSensitivity, agreement, choose_fp32_convs
from .onnx_export import export_onnx
from .onnx_runtime import fixed_image_size
from ._qdq import check_calibration, conv_nodes
from .quantization import Int8Recipe

onnx = require('onnx', 'onnx')
openvino = require('openvino', 'openvino')

# Calibration methods NNCF offers under this project's names.
OPENVINO_CALIBRATION_METHODS = ('minmax', 'percentile')
# The op types an ONNX Conv becomes (grouped convs, as in RepVGG-B1g2, are the second).
CONVOLUTION_TYPES = ('Convolution', 'GroupConvolution')
# Recipe fields only the ONNX Runtime file has.
_ONNXRUNTIME_SETTINGS = ('weight_bits', 'int8_kernels')


class _StackT(ctypes.Structure):
    """Linux's ``stack_t`` (the same field order on x86-64 and aarch64)."""
    _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int),
                ('ss_size', ctypes.c_size_t)]


def _sigaltstack(new: Optional[_StackT]) -> Tuple[_StackT, tuple]:
    """Install ``new`` as this thread's alternate signal stack (None: only read); return the
    old one and its ``(sp, size, flags)``."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = _StackT()
    if libc.sigaltstack(None if new is None else ctypes.byref(new), ctypes.byref(old)):
        error = ctypes.get_errno()
        raise OSError(error, f'sigaltstack: {os.strerror(error)}')
    return old, (old.ss_sp, old.ss_size, old.ss_flags)


@contextlib.contextmanager
def _signal_stack_kept() -> Iterator[None]:
    """Run the block, then give the calling thread back its alternate signal stack (Linux;
    not where the kernel refuses it).

    An OpenVINO CPU plugin installs a stack of its own and, destroyed, puts back the one it
    replaced: two destroyed in creation order leave the thread on an unmapped stack, where
    the next signal handler dies with SIGSEGV (docs/int8.md)."""
    if not sys.platform.startswith('linux'):
        yield
        return
    before, before_fields = _sigaltstack(None)
    try:
        yield
    finally:
        if _sigaltstack(None)[1] != before_fields:
            with contextlib.suppress(OSError):
                _sigaltstack(before)


def _ir_weights_path(xml_path: str) -> str:
    return os.path.splitext(xml_path)[0] + '.bin'


class OpenVINOModel(nn.Module):
    """An IR's ``.xml``, an ONNX file or an ``openvino.Model`` compiled for the CPU, run like
    the PyTorch model: images ``(N, C, H, W)`` float32 in (tensor or array), the first
    output out (the same type)."""

    def __init__(self, ir, threads: Optional[int] = None):
        super().__init__()
        config = {'INFERENCE_PRECISION_HINT': 'f32'}
        if threads is not None:
            config['INFERENCE_NUM_THREADS'] = threads
        with _signal_stack_kept():
            self.compiled = openvino.Core().compile_model(ir, 'CPU', config)
        self.input_size = fixed_image_size(
            [dim.get_length() if dim.is_static else None
             for dim in self.compiled.input(0).get_partial_shape()])
        self._request = self.compiled.create_infer_request()

    def forward(self, images: Union[Tensor, np.ndarray]) -> Union[Tensor, np.ndarray]:
        array = (images.astype(np.float32, copy=False) if isinstance(images, np.ndarray)
                 else images.detach().float().cpu().contiguous().numpy())
        logits = np.array(self._request.infer({0: array})[self.compiled.output(0)])
        return logits if isinstance(images, np.ndarray) else torch.from_numpy(logits)


def _openvino_convolutions(model, fp32_onnx_path: str, onnx_nodes: Sequence[str]) -> List[str]:
    """The names of the convolutions of ``model`` (converted from ``fp32_onnx_path``) that
    its Conv nodes ``onnx_nodes`` became; ValueError for a name that is none."""
    graph = onnx.load(fp32_onnx_path, load_external_data=False).graph
    conv_outputs = {node.name: node.output[0] for node in graph.node if node.op_type == 'Conv'}
    writers = {name: op for op in model.get_ops() for output in op.outputs()
               for name in output.get_names()}
    names = []
    # The converter names a Conv's bias Add after the node: find the node by its output
    # tensor, and go back through that Add.
    for node in onnx_nodes:
        if node not in conv_outputs:
            raise ValueError(f'{node!r} is no Conv node of {fp32_onnx_path}; name one of '
                             'its Conv nodes (qdq.conv_nodes)')
        op = writers.get(conv_outputs[node])
        if op is not None and op.get_type_name() == 'Add':
            op = op.input_value(0).get_node()
        if op is None or op.get_type_name() not in CONVOLUTION_TYPES:
            raise ValueError(f'{fp32_onnx_path}: no OpenVINO convolution computes the '
                             f'output of Conv {node!r}; it cannot be kept FP32')
        names.append(op.get_friendly_name())
    return names


def _points(compiled, batches: Iterable[tuple]) -> Tuple[float, list]:
    """NNCF's validation_fn: a compiled model's top-1 (or mIoU) points on ``(images, labels)``
    batches as :func:`agreement` counts them, and its logits per batch (to rank convs by)."""
    outputs = []  # (images, logits) of each batch, in order

    def logits_of(images):  # agreement asks for both sides of each batch: infer once
        if not outputs or outputs[-1][0] is not images:
            outputs.append((images, compiled(images)[0]))
        return outputs[-1][1]

    measured = agreement(logits_of, logits_of, batches)
    points = (100 * measured.candidate_correct / measured.num_images
              if isinstance(measured, Agreement) else measured.candidate_miou)
    return points, [[logits] for _, logits in outputs]


def _quantize_ir(fp32_onnx_path: str, calibration: Sequence[np.ndarray],
                 method: str = 'minmax', fp32_nodes: Sequence[str] = (),
                 held_out: Sequence[tuple] = (), max_drop_points: Optional[float] = None):
    """The NNCF INT8 form of an FP32 ONNX model (in memory), the Conv nodes ``fp32_nodes``
    FP32 and, given ``max_drop_points``, those NNCF's accuracy control keeps FP32 to stay
    within that many :func:`_points` of FP32 on ``held_out``; ValueError for a bad request."""
    check_calibration(method, OPENVINO_CALIBRATION_METHODS, calibration, 'OpenVINO')
    nncf = require_nncf()
    advanced = require_nncf('nncf.quantization.advanced_parameters')
    estimators = require_nncf('nncf.quantization.range_estimator').RangeEstimatorParametersSet
    estimator = {'minmax': estimators.MINMAX, 'percentile': estimators.MEAN_QUANTILE}[method]
    model = openvino.convert_model(fp32_onnx_path)
    ignored = _openvino_convolutions(model, fp32_onnx_path, fp32_nodes)
    # NNCF compiles the model in CPU plugins of its own. One dataset item is one batch:
    # subset_size counts batches.
    settings = dict(preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calibration),
                    ignored_scope=nncf.IgnoredScope(names=ignored, validate=True))
    parameters = advanced.AdvancedQuantizationParameters(
        activations_range_estimator_params=estimator)
    with _signal_stack_kept():
        if max_drop_points is None:
            return nncf.quantize(model, nncf.Dataset(list(calibration)),
                                 advanced_parameters=parameters, **settings)
        return nncf.quantize_with_accuracy_control(  # the drop in _points' units
            model, nncf.Dataset(list(calibration)), nncf.Dataset(held_out, lambda item: item[0]),
            _points, max_drop=max_drop_points, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=parameters, **settings)


def _unquantized_convs(ir_model, fp32_onnx_path: str) -> List[str]:
    """The ONNX Conv nodes whose convolution in ``ir_model`` reads no FakeQuantize, in order."""
    nodes = conv_nodes(fp32_onnx_path)
    fp32 = {op.get_friendly_name() for op in ir_model.get_ops() if op.get_type_name() in
            CONVOLUTION_TYPES and op.input_value(0).get_node().get_type_name() != 'FakeQuantize'}
    return [node for node, name in zip(nodes, _openvino_convolutions(
        ir_model, fp32_onnx_path, nodes)) if name in fp32]


class _OpenVINOReport(NamedTuple):
    """The ``.xml`` written (absolute), the ONNX Conv nodes kept FP32, the accuracy bound
    NNCF's accuracy control kept (None: not used) and whether any conv computes in INT8."""
    path: str
    fp32_nodes: List[str]
    bound_points: Optional[float] = None
    quantized: bool = False


def _onnx_to_openvino(fp32_onnx_path: str, xml_path: str,
                      calibration: Optional[List[np.ndarray]] = None,
                      held_out: Optional[Iterable[tuple]] = None,
                      recipe: Optional[Int8Recipe] = None, overwrite: bool = False,
                      sensitivity: Optional[Sequence[LayerSensitivity]] = None
                      ) -> _OpenVINOReport:
    """Convert an FP32 ONNX model to an OpenVINO IR: FP32, or INT8 (NNCF) given
    ``calibration`` batches: ``recipe.keep_fp32`` convs FP32 (ranked on ``held_out``, or by
    ``sensitivity``), or else, given ``held_out``, within ``recipe.max_drop_points`` (or
    ``accuracy_bound_points``) of FP32 on it by NNCF's accuracy control. The ``.bin`` is
    written before the ``.xml``, each atomically: an interrupted run leaves no IR that loads.
    Refusals: :func:`_check_request`."""
    recipe = recipe or Int8Recipe()
    xml_path = _check_request(xml_path, overwrite, calibration, recipe, held_out,
                              [fp32_onnx_path])
    held_out, fp32_nodes, bound = list(held_out or ()), [], recipe.max_drop_points
    if recipe.keep_fp32:  # ranked by ONNX Runtime (the same scheme)
        fp32_nodes, bound = choose_fp32_convs(fp32_onnx_path, calibration, held_out, recipe,
                                              None, sensitivity), None
    elif calibration is not None and held_out and bound is None:
        bound = recipe.accuracy_bound_points
    ir_model = (openvino.convert_model(fp32_onnx_path) if calibration is None else _quantize_ir(
        fp32_onnx_path, calibration, recipe.calibration_method, fp32_nodes, held_out, bound))
    fp32_nodes = fp32_nodes if bound is None else _unquantized_convs(ir_model, fp32_onnx_path)
    with tempfile.TemporaryDirectory() as workdir:
        staged_xml = os.path.join(workdir, 'model.xml')
        openvino.save_model(ir_model, staged_xml, compress_to_fp16=False)
        # The .xml names its weights by the .bin's base name: keep the stem.
        for staged, final in ((_ir_weights_path(staged_xml), _ir_weights_path(xml_path)),
                              (staged_xml, xml_path)):
            with atomic_output(final, overwrite, [fp32_onnx_path]) as temporary_path:
                with open(staged, 'rb') as source, open(temporary_path, 'wb') as target:
                    target.write(source.read())
    openvino.Core().read_model(xml_path)  # loads: fail here, not at first use
    quantized = any(op.get_type_name() == 'FakeQuantize' for op in ir_model.get_ops())
    return _OpenVINOReport(xml_path, fp32_nodes, bound, quantized)


def _check_request(xml_path: str, overwrite: bool, calibration, recipe: Int8Recipe,
                   held_out, inputs: Sequence[str] = ()) -> str:
    """``xml_path`` made absolute, after refusing an existing IR (or one of ``inputs``), no
    ``.xml``, ONNX Runtime settings, or mixed precision without ``held_out``/``calibration``."""
    xml_path = os.path.abspath(xml_path)
    if not xml_path.endswith('.xml'):
        raise ValueError(f'{xml_path}: an OpenVINO IR is an .xml file (with its .bin); '
                         'name the output NAME.xml')
    for path in (xml_path, _ir_weights_path(xml_path)):
        check_output(path, inputs, overwrite)
    default = Int8Recipe()
    changed = [key for key in _ONNXRUNTIME_SETTINGS
               if getattr(recipe, key) != getattr(default, key)]
    if changed:
        raise ValueError(f'INT8 recipe {", ".join(changed)}: ONNX Runtime settings; leave '
                         'them at their defaults for OpenVINO')
    if recipe.mixed_precision(held_out) and calibration is None:
        raise ValueError('mixed precision keeps convs FP32 in an INT8 IR; pass '
                         'calibration batches')
    return xml_path


def export_openvino(model: nn.Module, xml_path: str, input_shape: Sequence[int],
                    calibration: Optional[List[np.ndarray]] = None,
                    held_out: Optional[Iterable[tuple]] = None,
                    recipe: Optional[Int8Recipe] = None,
                    overwrite: bool = False) -> _OpenVINOReport:
    """Write the deploy form of ``model`` as an OpenVINO IR by :func:`_onnx_to_openvino`
    of a verified FP32 ONNX export traced at ``input_shape`` ``(N, C, H, W)`` (dynamic
    batch)."""
    recipe = recipe or Int8Recipe()
    _check_request(xml_path, overwrite, calibration, recipe, held_out)
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'), input_shape,
                           dynamic_batch=True, opset=recipe.opset)
        return _onnx_to_openvino(fp32.path, xml_path, calibration, held_out, recipe,
                                 overwrite)

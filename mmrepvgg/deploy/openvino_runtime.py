"""OpenVINO as a second CPU runtime: the deploy model as an OpenVINO IR (``.xml`` + ``.bin``),
FP32 or INT8 by NNCF's post-training quantization, calibrated on real preprocessed images.

The IR is converted from the same verified ONNX export the ONNX Runtime path uses
(:func:`.onnx_export.export_onnx`), so both runtimes start from one graph. NNCF inserts
FakeQuantize ops on the activations (per tensor) and stores the weights as per-channel
symmetric int8 constants, which OpenVINO's CPU plugin runs as integer convs. Mixed
precision keeps the convs most sensitive to INT8 in FP32, chosen as for ONNX Runtime
(:func:`openvino_fp32_convs`). Two settings keep the comparison with FP32
honest: weights are saved in FP32 (``save_model`` would store FP16 by default), and the
CPU plugin runs the non-quantized parts in f32 (``INFERENCE_PRECISION_HINT``; on CPUs
with AMX or AVX-512 BF16 it would pick bf16).
"""
import os
import tempfile
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np
from torch import nn

from ..checkpoint import atomic_output, check_output
from ..compat import require_nncf
from ..utils import require
from .onnx_export import DEFAULT_OPSET, export_onnx
from .quantization import (Agreement, LayerSensitivity, check_calibration, check_keep_fp32,
                           check_mixed_precision, fp32_convs, layer_sensitivity, onnx_logits,
                           top1_agreement)
from .signal_stack import signal_stack_kept

onnx = require('onnx', 'onnx')
openvino = require('openvino', 'openvino')

# Calibration methods NNCF offers under this project's names (see quantization.py).
OPENVINO_CALIBRATION_METHODS = ('minmax', 'percentile')
# The op types an ONNX Conv becomes (grouped convs, as in RepVGG-B1g2, are the second).
CONVOLUTION_TYPES = ('Convolution', 'GroupConvolution')


def _range_estimator(method: str):
    range_estimator = require_nncf('nncf.quantization.range_estimator')
    return {'minmax': range_estimator.RangeEstimatorParametersSet.MINMAX,
            'percentile': range_estimator.RangeEstimatorParametersSet.MEAN_QUANTILE}[method]


def ir_weights_path(xml_path: str) -> str:
    """The ``.bin`` file an IR's ``.xml`` reads its weights from (same stem)."""
    return os.path.splitext(xml_path)[0] + '.bin'


def compiled_model(ir, num_threads: Optional[int] = None):
    """An OpenVINO CPU model compiled from ``ir`` (an IR's ``.xml`` path or an in-memory
    ``openvino.Model``), f32 where not quantized; ``num_threads`` inference threads
    (default: OpenVINO's). The calling thread keeps its alternate signal stack
    (:mod:`.signal_stack`)."""
    config = {'INFERENCE_PRECISION_HINT': 'f32'}
    if num_threads is not None:
        config['INFERENCE_NUM_THREADS'] = num_threads
    with signal_stack_kept():
        return openvino.Core().compile_model(ir, 'CPU', config)


def openvino_logits(ir, num_threads: Optional[int] = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """A function from images ``(N, C, H, W)`` float32 to the first output of ``ir`` (see
    :func:`compiled_model`)."""
    model = compiled_model(ir, num_threads)
    request = model.create_infer_request()

    def logits(images: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: images})[model.output(0)])
    return logits


def openvino_convolutions(model, fp32_onnx_path: str, onnx_nodes: Sequence[str]) -> List[str]:
    """The friendly names of the OpenVINO convolutions that ``onnx_nodes`` (Conv node
    names of ``fp32_onnx_path``) became in ``model`` (``openvino.convert_model`` of it).

    The converter keeps an ONNX node's name on the op that writes the node's output,
    which for a Conv with a bias is the bias ``Add`` behind a convolution of another
    name. So each node is found by its output tensor's name, which the converter keeps,
    and followed back through that Add to the convolution NNCF quantizes.

    Raises:
        ValueError: a name that is no Conv node of ``fp32_onnx_path``, or a Conv the
            converted model holds no convolution for.
    """
    graph = onnx.load(fp32_onnx_path, load_external_data=False).graph
    conv_outputs = {node.name: node.output[0] for node in graph.node if node.op_type == 'Conv'}
    writers = {name: op for op in model.get_ops() for output in op.outputs()
               for name in output.get_names()}
    names = []
    for node in onnx_nodes:
        if node not in conv_outputs:
            raise ValueError(f'{node!r} is no Conv node of {fp32_onnx_path}; name one of '
                             'its Conv nodes (quantization.conv_nodes)')
        op = writers.get(conv_outputs[node])
        if op is not None and op.get_type_name() == 'Add':
            op = op.input_value(0).get_node()
        if op is None or op.get_type_name() not in CONVOLUTION_TYPES:
            raise ValueError(f'{fp32_onnx_path}: no OpenVINO convolution computes the '
                             f'output of Conv {node!r}; it cannot be kept FP32')
        names.append(op.get_friendly_name())
    return names


def quantize_ir(fp32_onnx_path: str, calibration: Sequence[np.ndarray],
                method: str = 'minmax', fp32_nodes: Sequence[str] = ()):
    """The NNCF INT8 form of an FP32 ONNX classifier, as an in-memory OpenVINO model.

    Args:
        fp32_onnx_path: the FP32 ONNX file.
        calibration: preprocessed image batches ``(N, C, H, W)`` float32.
        method: one of :data:`OPENVINO_CALIBRATION_METHODS`.
        fp32_nodes: ONNX Conv node names to leave unquantized (mixed precision), mapped
            to OpenVINO's by :func:`openvino_convolutions`; NNCF checks that each one
            matches (a name that matched nothing would quietly quantize it).

    Raises:
        ValueError: an unknown ``method``, no calibration images or an unknown conv.
        MissingExtraError: NNCF is not installed.
    """
    check_calibration(method, OPENVINO_CALIBRATION_METHODS, calibration, 'OpenVINO')
    nncf = require_nncf()
    advanced = require_nncf('nncf.quantization.advanced_parameters')
    model = openvino.convert_model(fp32_onnx_path)
    ignored = openvino_convolutions(model, fp32_onnx_path, fp32_nodes)
    # NNCF compiles the model in CPU plugins of its own: the calling thread keeps its
    # alternate signal stack (.signal_stack). One dataset item is one batch: subset_size
    # counts batches.
    with signal_stack_kept():
        return nncf.quantize(
            model, nncf.Dataset(list(calibration)),
            preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=True),
            advanced_parameters=advanced.AdvancedQuantizationParameters(
                activations_range_estimator_params=_range_estimator(method)))


def openvino_fp32_convs(fp32_onnx_path: str, calibration: Sequence[np.ndarray],
                        held_out: Sequence[tuple], method: str = 'minmax',
                        keep_fp32: int = 0, max_drop_points: Optional[float] = None,
                        num_threads: Optional[int] = None,
                        sensitivity: Optional[Sequence[LayerSensitivity]] = None
                        ) -> List[str]:
    """The ONNX Conv nodes of ``fp32_onnx_path`` that OpenVINO mixed precision keeps FP32,
    most sensitive first (:func:`.quantization.fp32_convs`).

    The convs are ranked by ONNX Runtime's :func:`.quantization.layer_sensitivity` on the
    same FP32 file: the ranking is a property of each layer's weights and activations
    under the same scheme (per-channel int8 weights, per-tensor activations), computed
    by one function for both runtimes; a per-conv NNCF ranking would cost one NNCF run
    with statistics and bias correction per conv. The ``max_drop_points`` criterion is
    measured on what is deployed: each candidate is quantized by NNCF and run by OpenVINO
    against ONNX Runtime FP32 on ``held_out``.

    Args:
        fp32_onnx_path, calibration, method: see :func:`quantize_ir`.
        held_out: labelled ``(images, labels)`` batches not used for calibration.
        keep_fp32, max_drop_points: see :func:`.quantization.fp32_convs`.
        num_threads: OpenVINO inference threads of the check (default: OpenVINO's).
        sensitivity: that ranking when the caller already has it (for the same file,
            ``calibration``, ``held_out`` images and ``method``); None computes it.

    Raises:
        ValueError: ``keep_fp32`` is more than the model's convs (before the ranking).
    """
    check_keep_fp32(keep_fp32, fp32_onnx_path)
    if sensitivity is None:
        sensitivity = layer_sensitivity(fp32_onnx_path, calibration,
                                        [images for images, _ in held_out], method)
    reference = onnx_logits(fp32_onnx_path, num_threads=num_threads)

    def agreement_with(fp32_nodes: List[str]) -> Agreement:
        candidate = quantize_ir(fp32_onnx_path, calibration, method, fp32_nodes)
        return top1_agreement(reference, openvino_logits(candidate, num_threads), held_out)
    return fp32_convs(sensitivity, keep_fp32, max_drop_points, agreement_with)[0]


class OpenVINOReport(NamedTuple):
    """What :func:`export_openvino` wrote.

    Attributes:
        path: absolute path of the ``.xml`` file (its weights: :func:`ir_weights_path`).
        fp32_nodes: ONNX Conv nodes kept FP32 (mixed precision), most sensitive first.
    """
    path: str
    fp32_nodes: List[str]


def onnx_to_openvino(fp32_onnx_path: str, xml_path: str,
                     calibration: Optional[List[np.ndarray]] = None,
                     overwrite: bool = False, method: str = 'minmax', keep_fp32: int = 0,
                     max_drop_points: Optional[float] = None,
                     held_out: Optional[Iterable[tuple]] = None,
                     num_threads: Optional[int] = None,
                     sensitivity: Optional[Sequence[LayerSensitivity]] = None
                     ) -> OpenVINOReport:
    """Convert an FP32 ONNX classifier to an OpenVINO IR: FP32, or INT8 (NNCF) when
    ``calibration`` batches are given, with mixed precision on request. The ``.bin`` is
    written before the ``.xml`` that names it, each atomically, so an interrupted run
    leaves no IR that loads.

    Args:
        fp32_onnx_path: the FP32 ONNX file (only read).
        xml_path: the ``.xml`` file to write; the weights go to :func:`ir_weights_path`.
        calibration, method: see :func:`quantize_ir`.
        overwrite: replace an existing IR.
        keep_fp32, max_drop_points: mixed precision, see :func:`openvino_fp32_convs`.
        held_out: labelled batches mixed precision ranks and checks the convs on.
        num_threads: OpenVINO inference threads of that check.
        sensitivity: the conv ranking, if already computed (see
            :func:`openvino_fp32_convs`).

    Raises:
        FileExistsError: the ``.xml`` or ``.bin`` exists and ``overwrite`` is False.
        CheckpointError: the ``.xml`` or ``.bin`` is ``fp32_onnx_path`` (whatever
            ``overwrite`` says).
        ValueError: ``xml_path`` does not end in ``.xml``, or a recipe that cannot work
            (:func:`.quantization.check_mixed_precision`, mixed precision without
            ``calibration``); all checked before any work.
    """
    xml_path, mixed = _check_request(xml_path, overwrite, calibration, keep_fp32,
                                     max_drop_points, held_out, [fp32_onnx_path])
    fp32_nodes = []
    if mixed:
        fp32_nodes = openvino_fp32_convs(fp32_onnx_path, calibration, list(held_out),
                                         method, keep_fp32, max_drop_points, num_threads,
                                         sensitivity)
    ir_model = (openvino.convert_model(fp32_onnx_path) if calibration is None else
                quantize_ir(fp32_onnx_path, calibration, method, fp32_nodes))
    with tempfile.TemporaryDirectory() as workdir:
        staged_xml = os.path.join(workdir, 'model.xml')
        openvino.save_model(ir_model, staged_xml, compress_to_fp16=False)
        # The .xml names its weights by the .bin's base name: keep the stem.
        for staged, final in ((ir_weights_path(staged_xml), ir_weights_path(xml_path)),
                              (staged_xml, xml_path)):
            with atomic_output(final, overwrite, [fp32_onnx_path]) as temporary_path:
                with open(staged, 'rb') as source, open(temporary_path, 'wb') as target:
                    target.write(source.read())
    openvino.Core().read_model(xml_path)  # loads: fail here, not at first use
    return OpenVINOReport(xml_path, fp32_nodes)


def _check_request(xml_path: str, overwrite: bool, calibration, keep_fp32: int,
                   max_drop_points: Optional[float], held_out, inputs: Sequence[str] = ()
                   ) -> 'tuple[str, bool]':
    """``xml_path`` made absolute and whether mixed precision is asked for, after refusing
    what :func:`onnx_to_openvino` lists under Raises (``inputs``: files the IR must not
    replace)."""
    xml_path = os.path.abspath(xml_path)
    if not xml_path.endswith('.xml'):
        raise ValueError(f'{xml_path}: an OpenVINO IR is an .xml file (with its .bin); '
                         'name the output NAME.xml')
    for path in (xml_path, ir_weights_path(xml_path)):
        check_output(path, inputs, overwrite)
    mixed = check_mixed_precision(keep_fp32, max_drop_points, held_out)
    if mixed and calibration is None:
        raise ValueError('mixed precision keeps convs FP32 in an INT8 IR; pass '
                         'calibration batches')
    return xml_path, mixed


def export_openvino(model: nn.Module, xml_path: str, input_shape: Sequence[int],
                    calibration: Optional[List[np.ndarray]] = None,
                    overwrite: bool = False, method: str = 'minmax',
                    opset: int = DEFAULT_OPSET, keep_fp32: int = 0,
                    max_drop_points: Optional[float] = None,
                    held_out: Optional[Iterable[tuple]] = None) -> OpenVINOReport:
    """Write the deploy form of ``model`` as an OpenVINO IR (:func:`onnx_to_openvino` of a
    temporary, verified FP32 ONNX export).

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        xml_path, calibration, overwrite, method, keep_fp32, max_drop_points, held_out:
            see :func:`onnx_to_openvino`.
        input_shape: ``(N, C, H, W)`` traced (the batch stays dynamic).
        opset: ONNX opset of the intermediate export.

    Raises:
        FileExistsError, ValueError: see :func:`onnx_to_openvino` (checked before the
            export).
    """
    _check_request(xml_path, overwrite, calibration, keep_fp32, max_drop_points, held_out)
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'), input_shape,
                           dynamic_batch=True, opset=opset)
        return onnx_to_openvino(fp32.path, xml_path, calibration, overwrite, method,
                                keep_fp32, max_drop_points, held_out)


def openvino_runners(fp32_onnx_path: str, workdir: str, input_shape: Sequence[int],
                     num_threads: Optional[int]) -> dict:
    """FP32 and NNCF INT8 OpenVINO models of an FP32 ONNX file as ``{'fp32' or 'int8':
    f(images tensor) -> logits}``, for the benchmark's rows beside ONNX Runtime's on the
    same file (same graph, same weights). The INT8 IR is calibrated on two random batches
    of ``input_shape`` ``(N, C, H, W)``: enough for timing, which does not depend on the
    values. The IRs go to ``workdir``."""
    generator = np.random.default_rng(0)
    calibration = [generator.standard_normal(input_shape).astype(np.float32)
                   for _ in range(2)]
    runners = {}
    for name, batches in (('fp32', None), ('int8', calibration)):
        xml_path = onnx_to_openvino(fp32_onnx_path, os.path.join(
            workdir, f'openvino_{name}.xml'), batches, overwrite=True).path
        logits = openvino_logits(xml_path, num_threads)
        runners[name] = (lambda logits: lambda images: logits(images.numpy()))(logits)
    return runners

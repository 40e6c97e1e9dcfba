"""OpenVINO as a second CPU runtime: :class:`OpenVINOModel`, its one adapter, and the deploy
model as an OpenVINO IR (``.xml`` + ``.bin``), FP32 or INT8 by NNCF's post-training
quantization, calibrated on real preprocessed images.

The IR is converted from the same verified ONNX export the ONNX Runtime path uses
(:func:`.onnx_export.export_onnx`), so both runtimes start from one graph. NNCF inserts
FakeQuantize ops on the activations (per tensor) and stores the weights as per-channel
symmetric int8 constants, which OpenVINO's CPU plugin runs as integer convs. Mixed
precision keeps the convs most sensitive to INT8 in FP32, chosen as for ONNX Runtime
(:func:`.mixed_precision.choose_fp32_convs`). Two settings keep the comparison with FP32
honest: weights are saved in FP32 (``save_model`` would store FP16 by default), and the
CPU plugin runs the non-quantized parts in f32 (``INFERENCE_PRECISION_HINT``; on CPUs
with AMX or AVX-512 BF16 it would pick bf16).
"""
import os
import tempfile
from typing import Iterable, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import atomic_output, check_output
from .._compat import require_nncf
from .._utils import require
from ._mixed_precision import LayerSensitivity, choose_fp32_convs
from .onnx_export import export_onnx
from .onnx_runtime import fixed_image_size
from ._qdq import check_calibration
from .quantization import Int8Recipe
from ._signal_stack import signal_stack_kept

onnx = require('onnx', 'onnx')
openvino = require('openvino', 'openvino')

# Calibration methods NNCF offers under this project's names (see qdq.py).
OPENVINO_CALIBRATION_METHODS = ('minmax', 'percentile')
# The op types an ONNX Conv becomes (grouped convs, as in RepVGG-B1g2, are the second).
CONVOLUTION_TYPES = ('Convolution', 'GroupConvolution')


def _range_estimator(method: str):
    range_estimator = require_nncf('nncf.quantization.range_estimator')
    return {'minmax': range_estimator.RangeEstimatorParametersSet.MINMAX,
            'percentile': range_estimator.RangeEstimatorParametersSet.MEAN_QUANTILE}[method]


def _ir_weights_path(xml_path: str) -> str:
    """The ``.bin`` file an IR's ``.xml`` reads its weights from (same stem)."""
    return os.path.splitext(xml_path)[0] + '.bin'


class OpenVINOModel(nn.Module):
    """A model compiled by OpenVINO for the CPU, called like the PyTorch model: images
    ``(N, C, H, W)`` float32 (preprocessed as for the PyTorch model) in, the first output
    (a classifier's logits ``(N, num_classes)``) out; a tensor gives a tensor, a NumPy
    array an array. Parts that are not quantized run in f32.

    Args:
        ir: an IR's ``.xml`` path, an ONNX file, or an in-memory ``openvino.Model`` (what
            :func:`quantize_ir` returns); read once.
        threads: inference threads (default: OpenVINO's).

    Attributes:
        compiled: the ``openvino.CompiledModel``.
        input_size: ``(H, W)`` fixed in the model, None if symbolic.
    """

    def __init__(self, ir, threads: Optional[int] = None):
        super().__init__()
        config = {'INFERENCE_PRECISION_HINT': 'f32'}
        if threads is not None:
            config['INFERENCE_NUM_THREADS'] = threads
        # The calling thread keeps its alternate signal stack (.signal_stack).
        with signal_stack_kept():
            self.compiled = openvino.Core().compile_model(ir, 'CPU', config)
        self.input_size = fixed_image_size(
            [dim.get_length() if dim.is_static else None
             for dim in self.compiled.input(0).get_partial_shape()])
        self._request = self.compiled.create_infer_request()

    def forward(self, images: Union[Tensor, np.ndarray]) -> Union[Tensor, np.ndarray]:
        if isinstance(images, np.ndarray):
            return self._logits(images.astype(np.float32, copy=False))
        return torch.from_numpy(self._logits(images.detach().float().cpu().contiguous()
                                             .numpy()))

    def _logits(self, images: np.ndarray) -> np.ndarray:
        return np.array(self._request.infer({0: images})[self.compiled.output(0)])


def _openvino_convolutions(model, fp32_onnx_path: str, onnx_nodes: Sequence[str]) -> List[str]:
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
                             'its Conv nodes (qdq.conv_nodes)')
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
            to OpenVINO's by :func:`_openvino_convolutions`; NNCF checks that each one
            matches (a name that matched nothing would quietly quantize it).

    Raises:
        ValueError: an unknown ``method``, no calibration images or an unknown conv.
        MissingExtraError: NNCF is not installed.
    """
    check_calibration(method, OPENVINO_CALIBRATION_METHODS, calibration, 'OpenVINO')
    nncf = require_nncf()
    advanced = require_nncf('nncf.quantization.advanced_parameters')
    model = openvino.convert_model(fp32_onnx_path)
    ignored = _openvino_convolutions(model, fp32_onnx_path, fp32_nodes)
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


class OpenVINOReport(NamedTuple):
    """What :func:`export_openvino` wrote.

    Attributes:
        path: absolute path of the ``.xml`` file (its weights: the ``.bin`` beside it).
        fp32_nodes: ONNX Conv nodes kept FP32 (mixed precision), most sensitive first.
    """
    path: str
    fp32_nodes: List[str]


def onnx_to_openvino(fp32_onnx_path: str, xml_path: str,
                     calibration: Optional[List[np.ndarray]] = None,
                     held_out: Optional[Iterable[tuple]] = None,
                     recipe: Optional[Int8Recipe] = None, overwrite: bool = False,
                     sensitivity: Optional[Sequence[LayerSensitivity]] = None
                     ) -> OpenVINOReport:
    """Convert an FP32 ONNX classifier to an OpenVINO IR: FP32, or INT8 (NNCF) when
    ``calibration`` batches are given, with mixed precision if ``recipe`` asks. The
    ``.bin`` is written before the ``.xml`` that names it, each atomically, so an
    interrupted run leaves no IR that loads.

    Args:
        fp32_onnx_path: the FP32 ONNX file (only read).
        xml_path: the ``.xml`` file to write; the weights go to the same stem's ``.bin``.
        calibration: see :func:`quantize_ir`.
        held_out: labelled batches mixed precision ranks and checks the convs on.
        recipe: its ``calibration_method`` (minmax or percentile), ``keep_fp32`` and
            ``max_drop_points``; the others are ONNX Runtime settings and must keep their
            defaults (opset: of the caller's ONNX export).
        overwrite: replace an existing IR.
        sensitivity: the conv ranking, if already computed (see
            :func:`.mixed_precision.choose_fp32_convs`).

    Raises:
        FileExistsError: the ``.xml`` or ``.bin`` exists and ``overwrite`` is False.
        CheckpointError: the ``.xml`` or ``.bin`` is ``fp32_onnx_path`` (whatever
            ``overwrite`` says).
        ValueError: ``xml_path`` does not end in ``.xml``, or a recipe that cannot work
            (ONNX Runtime settings, mixed precision without ``held_out`` or
            ``calibration``); all checked before any work.
    """
    recipe = recipe or Int8Recipe()
    xml_path, mixed = _check_request(xml_path, overwrite, calibration, recipe, held_out,
                                     [fp32_onnx_path])
    method = recipe.calibration_method
    fp32_nodes = []
    if mixed:
        # Ranked by ONNX Runtime on the same FP32 file: the ranking is a property of each
        # layer's weights and activations under the same scheme (per-channel int8
        # weights, per-tensor activations), computed by one function for both runtimes;
        # a per-conv NNCF ranking would cost one NNCF run with statistics and bias
        # correction per conv. The max-drop candidates are NNCF's, run by OpenVINO.
        fp32_nodes = choose_fp32_convs(
            fp32_onnx_path, calibration, list(held_out), recipe,
            lambda nodes: OpenVINOModel(quantize_ir(fp32_onnx_path, calibration, method,
                                                    nodes)), sensitivity)
    ir_model = (openvino.convert_model(fp32_onnx_path) if calibration is None else
                quantize_ir(fp32_onnx_path, calibration, method, fp32_nodes))
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
    return OpenVINOReport(xml_path, fp32_nodes)


# Recipe fields only the ONNX Runtime file has.
_ONNXRUNTIME_SETTINGS = ('weight_bits', 'rounding', 'int8_kernels', 'accuracy_bound_points')


def _check_request(xml_path: str, overwrite: bool, calibration, recipe: Int8Recipe,
                   held_out, inputs: Sequence[str] = ()) -> 'tuple[str, bool]':
    """``xml_path`` made absolute and whether mixed precision is asked for, after refusing
    what :func:`onnx_to_openvino` lists under Raises (``inputs``: files the IR must not
    replace)."""
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
    mixed = recipe.mixed_precision(held_out)
    if mixed and calibration is None:
        raise ValueError('mixed precision keeps convs FP32 in an INT8 IR; pass '
                         'calibration batches')
    return xml_path, mixed


def export_openvino(model: nn.Module, xml_path: str, input_shape: Sequence[int],
                    calibration: Optional[List[np.ndarray]] = None,
                    held_out: Optional[Iterable[tuple]] = None,
                    recipe: Optional[Int8Recipe] = None,
                    overwrite: bool = False) -> OpenVINOReport:
    """Write the deploy form of ``model`` as an OpenVINO IR (:func:`onnx_to_openvino` of a
    temporary, verified FP32 ONNX export with ``recipe``'s opset).

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        xml_path, calibration, held_out, recipe, overwrite: see :func:`onnx_to_openvino`.
        input_shape: ``(N, C, H, W)`` traced (the batch stays dynamic).

    Raises:
        FileExistsError, ValueError: see :func:`onnx_to_openvino` (checked before the
            export).
    """
    recipe = recipe or Int8Recipe()
    _check_request(xml_path, overwrite, calibration, recipe, held_out)
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'), input_shape,
                           dynamic_batch=True, opset=recipe.opset)
        return onnx_to_openvino(fp32.path, xml_path, calibration, held_out, recipe,
                                overwrite)

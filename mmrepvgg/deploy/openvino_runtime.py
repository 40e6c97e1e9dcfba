"""OpenVINO as a second CPU runtime: the deploy model as an OpenVINO IR (``.xml`` + ``.bin``),
FP32 or INT8 by NNCF's post-training quantization, calibrated on real preprocessed images.

The IR is converted from the same verified ONNX export the ONNX Runtime path uses
(:func:`.onnx_export.export_onnx`), so both runtimes start from one graph. NNCF inserts
FakeQuantize ops (per-channel symmetric int8 weights, per-tensor activations) that
OpenVINO's CPU plugin runs as integer convs. Two settings keep the comparison with FP32
honest: weights are saved in FP32 (``save_model`` would store FP16 by default), and the
CPU plugin runs the non-quantized parts in f32 (``INFERENCE_PRECISION_HINT``; on CPUs
with AMX or AVX-512 BF16 it would pick bf16).
"""
import os
import tempfile
from typing import Callable, List, Optional, Sequence

import numpy as np
from torch import nn

from ..checkpoint import atomic_output
from ..utils import require
from .onnx_export import DEFAULT_OPSET, export_onnx
from .quantization import check_calibration

openvino = require('openvino', 'openvino')

# Calibration methods NNCF offers under this project's names (see quantization.py).
OPENVINO_CALIBRATION_METHODS = ('minmax', 'percentile')


def _range_estimator(method: str):
    range_estimator = require('nncf.quantization.range_estimator', 'openvino')
    return {'minmax': range_estimator.RangeEstimatorParametersSet.MINMAX,
            'percentile': range_estimator.RangeEstimatorParametersSet.MEAN_QUANTILE}[method]


def ir_weights_path(xml_path: str) -> str:
    """The ``.bin`` file an IR's ``.xml`` reads its weights from (same stem)."""
    return os.path.splitext(xml_path)[0] + '.bin'


def compiled_model(xml_path: str, num_threads: Optional[int] = None):
    """An OpenVINO CPU model compiled from ``xml_path`` (f32 where not quantized);
    ``num_threads`` inference threads (default: OpenVINO's)."""
    config = {'INFERENCE_PRECISION_HINT': 'f32'}
    if num_threads is not None:
        config['INFERENCE_NUM_THREADS'] = num_threads
    return openvino.Core().compile_model(xml_path, 'CPU', config)


def openvino_logits(xml_path: str, num_threads: Optional[int] = None
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """A function from images ``(N, C, H, W)`` float32 to the IR's first output."""
    model = compiled_model(xml_path, num_threads)
    request = model.create_infer_request()

    def logits(images: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: images})[model.output(0)])
    return logits


def quantize_ir(fp32_onnx_path: str, calibration: Sequence[np.ndarray],
                method: str = 'minmax', fp32_nodes: Sequence[str] = ()):
    """The NNCF INT8 form of an FP32 ONNX classifier, as an in-memory OpenVINO model.

    Args:
        fp32_onnx_path: the FP32 ONNX file.
        calibration: preprocessed image batches ``(N, C, H, W)`` float32.
        method: one of :data:`OPENVINO_CALIBRATION_METHODS`.
        fp32_nodes: ONNX node names to leave unquantized (mixed precision).

    Raises:
        ValueError: an unknown ``method`` or no calibration images.
        MissingExtraError: NNCF is not installed.
    """
    check_calibration(method, OPENVINO_CALIBRATION_METHODS, calibration, 'OpenVINO')
    nncf = require('nncf', 'openvino')
    advanced = require('nncf.quantization.advanced_parameters', 'openvino')
    model = openvino.convert_model(fp32_onnx_path)
    # One dataset item is one batch: subset_size counts batches.
    return nncf.quantize(
        model, nncf.Dataset(list(calibration)), preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(names=list(fp32_nodes), validate=False),
        advanced_parameters=advanced.AdvancedQuantizationParameters(
            activations_range_estimator_params=_range_estimator(method)))


def export_openvino(model: nn.Module, xml_path: str, input_shape: Sequence[int],
                    calibration: Optional[List[np.ndarray]] = None,
                    overwrite: bool = False, method: str = 'minmax',
                    opset: int = DEFAULT_OPSET) -> str:
    """Write the deploy form of ``model`` as an OpenVINO IR: FP32, or INT8 (NNCF) when
    ``calibration`` batches are given. The ``.bin`` is written before the ``.xml`` that
    names it, each atomically, so an interrupted run leaves no IR that loads.

    Args:
        model: a model holding RepVGG blocks, train or deploy form (not changed).
        xml_path: the ``.xml`` file to write; the weights go to :func:`ir_weights_path`.
        input_shape: ``(N, C, H, W)`` traced (the batch stays dynamic).
        calibration, method: see :func:`quantize_ir`.
        overwrite: replace an existing IR.
        opset: ONNX opset of the intermediate export.

    Returns:
        The absolute path of the ``.xml`` file.

    Raises:
        FileExistsError: the ``.xml`` or ``.bin`` exists and ``overwrite`` is False.
        ValueError: ``xml_path`` does not end in ``.xml``.
    """
    xml_path = os.path.abspath(xml_path)
    if not xml_path.endswith('.xml'):
        raise ValueError(f'{xml_path}: an OpenVINO IR is an .xml file (with its .bin); '
                         'name the output NAME.xml')
    bin_path = ir_weights_path(xml_path)
    for path in (xml_path, bin_path):
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f'{path} exists; pass --force (overwrite=True) to '
                                  'replace it')
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = export_onnx(model, os.path.join(workdir, 'fp32.onnx'), input_shape,
                           dynamic_batch=True, opset=opset)
        ir_model = (openvino.convert_model(fp32.path) if calibration is None else
                    quantize_ir(fp32.path, calibration, method))
        staged_xml = os.path.join(workdir, 'model.xml')
        openvino.save_model(ir_model, staged_xml, compress_to_fp16=False)
        # The .xml names its weights by the .bin's base name: keep the stem.
        for staged, final in ((ir_weights_path(staged_xml), bin_path),
                              (staged_xml, xml_path)):
            with atomic_output(final, overwrite) as temporary_path:
                with open(staged, 'rb') as source, open(temporary_path, 'wb') as target:
                    target.write(source.read())
        openvino.Core().read_model(xml_path)  # loads: fail here, not at first use
    return xml_path


def openvino_runners(deploy_model: nn.Module, workdir: str, input_shape: Sequence[int],
                     num_threads: Optional[int]) -> dict:
    """FP32 and NNCF INT8 OpenVINO models of ``deploy_model`` as
    ``{'fp32' or 'int8': f(images tensor) -> logits}``, for the benchmark's rows beside ONNX
    Runtime's (same weights; the INT8 IR is calibrated on two random batches of
    ``input_shape`` ``(N, C, H, W)``: enough for timing, which does not depend on the
    values). The files go to ``workdir``."""
    generator = np.random.default_rng(0)
    calibration = [generator.standard_normal(input_shape).astype(np.float32)
                   for _ in range(2)]
    runners = {}
    for name, batches in (('fp32', None), ('int8', calibration)):
        xml_path = export_openvino(deploy_model, os.path.join(
            workdir, f'openvino_{name}.xml'),
            (1, *input_shape[1:]), batches, overwrite=True)
        logits = openvino_logits(xml_path, num_threads)
        runners[name] = (lambda logits: lambda images: logits(images.numpy()))(logits)
    return runners

"""Run an exported classifier (ONNX or OpenVINO IR) on a config's own data, as mmengine's
Runner runs the PyTorch model: same dataloader, same ``data_preprocessor``
(normalisation), same evaluator.

- :class:`OnnxRuntimeClassifier` and :class:`OpenVINOClassifier` stand in for the
  config's model in a Runner's test loop (``tools/deployment/test.py``);
- :func:`preprocessed_batches` yields model-ready image batches of a config's dataset
  (INT8 calibration and agreement checks);
- :func:`pipeline_image_size` reads the image size the config's test pipeline makes.
"""
import copy
import os
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from torch import Tensor

from ..config_file import ConfigError
from ..registry import MODELS
from .onnx_export import onnxruntime, onnxruntime_session


def data_preprocessor_cfg(cfg: Config) -> dict:
    """The ``data_preprocessor`` the Runner gives the config's model: the model's own,
    else the config's top-level one, else mmpretrain's default ``ClsDataPreprocessor``."""
    preprocessor = (cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor')
                    or {})
    preprocessor = copy.deepcopy(dict(preprocessor))
    preprocessor.setdefault('type', 'ClsDataPreprocessor')
    return preprocessor


def logits_to_predictions(logits: Tensor,
                          data_samples: Optional[List[DataSample]]) -> List[DataSample]:
    """What an mmpretrain classification head's ``predict`` returns for ``logits``
    ``(N, num_classes)``: softmax scores and the arg-max label set on each sample."""
    scores = torch.softmax(logits, dim=1)
    labels = scores.argmax(dim=1, keepdim=True)
    samples = data_samples or [DataSample() for _ in range(len(logits))]
    return [sample.set_pred_score(score).set_pred_label(label)
            for sample, score, label in zip(samples, scores, labels)]


class ExportedClassifier(BaseModel):
    """An exported classifier behind mmengine's model interface: :meth:`forward` runs
    ``self.logits`` (images ``(N, C, H, W)`` float32 -> logits ``(N, num_classes)``)
    on the preprocessed batch, after checking the batch has the file's image size."""

    model_file: str
    logits: Callable[[np.ndarray], np.ndarray]
    input_size: Optional[Tuple[int, int]]  # (H, W) fixed in the file, None if symbolic

    def forward(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'predict') -> List[DataSample]:
        if mode != 'predict':
            raise ValueError(f"an exported model only predicts; got mode={mode!r}")
        data_size = tuple(inputs.shape[2:])
        if self.input_size is not None and data_size != self.input_size:
            raise ConfigError(
                f'{self.model_file} takes {self.input_size[0]}x{self.input_size[1]} '
                f"images but the config's test pipeline makes {data_size[0]}x"
                f'{data_size[1]}; export again with --shape {data_size[0]} {data_size[1]} '
                '(or without --shape: the export takes the pipeline size)')
        logits = self.logits(inputs.float().numpy())
        return logits_to_predictions(torch.from_numpy(np.asarray(logits)), data_samples)


def _fixed_size(dims: Sequence) -> Optional[Tuple[int, int]]:
    """(H, W) of an ``(N, C, H, W)`` input whose H and W are integers, else None."""
    height, width = dims[2:4]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


@MODELS.register_module()
class OnnxRuntimeClassifier(ExportedClassifier):
    """An ONNX classifier run by ONNX Runtime (CPU).

    Args:
        onnx_file: an ONNX file whose first input takes the preprocessed images
            ``(N, C, H, W)`` float32 and whose first output is the logits
            ``(N, num_classes)`` (what ``tools/deployment/pytorch2onnx.py`` writes, FP32
            or INT8).
        data_preprocessor: normalisation and batching, as for the PyTorch model (see
            :func:`data_preprocessor_cfg`).
        num_threads: ONNX Runtime intra-op threads (default: ONNX Runtime's).
        int8_kernels: see :func:`.onnx_export.onnxruntime_session`.
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None,
                 num_threads: Optional[int] = None, int8_kernels: str = 'auto'):
        super().__init__(data_preprocessor=data_preprocessor or
                         dict(type='ClsDataPreprocessor'))
        self.model_file = onnx_file
        self.session = onnxruntime_session(onnx_file, num_threads, int8_kernels)
        model_input = self.session.get_inputs()[0]
        self.input_size = _fixed_size(model_input.shape)
        self.logits = lambda images: self.session.run(None, {model_input.name: images})[0]


@MODELS.register_module()
class OpenVINOClassifier(ExportedClassifier):
    """An OpenVINO IR classifier (``.xml`` + ``.bin``) run on the CPU; arguments as for
    :class:`OnnxRuntimeClassifier` (``xml_file`` instead of ``onnx_file``)."""

    def __init__(self, xml_file: str, data_preprocessor: Optional[dict] = None,
                 num_threads: Optional[int] = None):
        super().__init__(data_preprocessor=data_preprocessor or
                         dict(type='ClsDataPreprocessor'))
        from .openvino_runtime import compiled_model, openvino_logits  # [openvino] extra
        self.model_file = xml_file
        shape = compiled_model(xml_file, num_threads).input(0).get_partial_shape()
        self.input_size = _fixed_size([dim.get_length() if dim.is_static else None
                                       for dim in shape])
        self.logits = openvino_logits(xml_file, num_threads)


def _load_error(model_file: str, runtime: str, error: Exception) -> ConfigError:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return ConfigError(f'{model_file}: {runtime} cannot load it ({lines[0]}); pass a '
                       'file written by tools/deployment/pytorch2onnx.py')


def exported_model_test_config(cfg: Config, model_file: str,
                               num_threads: Optional[int] = None,
                               int8_kernels: str = 'auto') -> Config:
    """``cfg`` (in place) with its model replaced by the exported ``model_file``: an
    ``.xml`` OpenVINO IR (:class:`OpenVINOClassifier`), else an ONNX file
    (:class:`OnnxRuntimeClassifier`); no checkpoint to load; dataloader and evaluator
    are unchanged.

    Raises:
        ConfigError: ``model_file`` is missing, empty, or not a model the runtime loads.
        MissingExtraError: an IR without the ``[openvino]`` extra.
    """
    if not os.path.isfile(model_file):
        raise ConfigError(f'{model_file}: no such model file; check the path')
    if os.path.getsize(model_file) == 0:
        raise ConfigError(f'{model_file}: the file is empty (0 bytes); export it again '
                          'with tools/deployment/pytorch2onnx.py')
    preprocessor = data_preprocessor_cfg(cfg)
    if model_file.endswith('.xml'):
        from .openvino_runtime import compiled_model
        try:
            compiled_model(model_file, num_threads)  # fail here, in one line
        except RuntimeError as error:
            raise _load_error(model_file, 'OpenVINO', error) from error
        cfg.model = dict(type='OpenVINOClassifier', xml_file=model_file,
                         data_preprocessor=preprocessor, num_threads=num_threads)
    else:
        try:
            onnxruntime_session(model_file, num_threads, int8_kernels)
        except (onnxruntime.capi.onnxruntime_pybind11_state.Fail,
                onnxruntime.capi.onnxruntime_pybind11_state.InvalidGraph,
                onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf) as error:
            raise _load_error(model_file, 'ONNX Runtime', error) from error
        cfg.model = dict(type='OnnxRuntimeClassifier', onnx_file=model_file,
                         data_preprocessor=preprocessor, num_threads=num_threads,
                         int8_kernels=int8_kernels)
    cfg.load_from = None
    return cfg


def pipeline_image_size(cfg: Config) -> Optional[Tuple[int, int]]:
    """The ``(H, W)`` every image has after the config's test pipeline, read from its
    transforms (a fixed ``Resize`` or a ``CenterCrop``), or None when it depends on the
    image (e.g. ``ResizeEdge`` without a crop after it)."""
    loader = cfg.get('test_dataloader')
    pipeline = (loader.get('dataset', {}).get('pipeline', [])
                if isinstance(loader, dict) else [])
    size = None
    for transform in pipeline:
        kind = transform.get('type', '')
        if kind == 'CenterCrop':
            size = _width_height(transform['crop_size'])
        elif kind == 'Resize':
            size = (None if transform.get('keep_ratio') else
                    _width_height(transform.get('scale')))
        elif kind in ('ResizeEdge', 'RandomResize'):  # the size depends on the image
            size = None
    return None if size is None else (size[1], size[0])


def _width_height(value) -> Optional[Tuple[int, int]]:
    """mmcv's ``scale`` / ``crop_size``: an int (square) or ``(w, h)``."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(side, int) for side in value):
        return int(value[0]), int(value[1])
    return None


class PreprocessedBatch(NamedTuple):
    """Images as the model receives them, ``(N, C, H, W)`` float32, and labels ``(N, )``."""
    images: np.ndarray
    labels: np.ndarray


def preprocessed_batches(cfg: Config, dataloader_key: str, num_images: int,
                         shuffle: bool, pipeline_from: Optional[str] = None,
                         batch_size: Optional[int] = None, seed: int = 0
                         ) -> Iterator[PreprocessedBatch]:
    """Batches of the first ``num_images`` images of ``cfg[dataloader_key]``'s dataset,
    through its pipeline and the model's ``data_preprocessor``, in the main process.

    Args:
        cfg: a config from :func:`mmrepvgg.engine.load_repvgg_config`.
        dataloader_key: e.g. ``'train_dataloader'`` or ``'test_dataloader'``.
        num_images: how many images in all (fewer if the dataset is smaller).
        shuffle: draw them in a random order (``seed``) instead of the dataset's order.
        pipeline_from: take the dataset's pipeline from this dataloader instead, e.g.
            ``'test_dataloader'`` to calibrate on training images without augmentation.
        batch_size: images per batch (default: the dataloader's).

    Raises:
        ConfigError: the dataloader is missing, or its data cannot be read.
    """
    if not isinstance(cfg.get(dataloader_key), dict):
        raise ConfigError(f'{cfg.filename}: has no {dataloader_key}; use a config with '
                          'data settings (e.g. configs/digits/repvgg-A0_digits.py)')
    loader_cfg = copy.deepcopy(cfg[dataloader_key])
    if pipeline_from is not None:
        loader_cfg['dataset']['pipeline'] = copy.deepcopy(
            cfg[pipeline_from]['dataset']['pipeline'])
    loader_cfg.update(num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=shuffle),
                      batch_size=batch_size or loader_cfg['batch_size'])
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        try:
            loader = Runner.build_dataloader(loader_cfg, seed=seed)
        except (OSError, KeyError, ValueError) as error:
            message = str(error).strip().strip('"')
            raise ConfigError(f'{cfg.filename}: cannot read the data of {dataloader_key} '
                              f'({message}); check data_root or prepare the data first '
                              '(the digits demo: python tools/demo.py)') from error
        preprocessor = MODELS.build(data_preprocessor_cfg(cfg)).eval()
    remaining = num_images
    for data in loader:
        if remaining <= 0:
            return
        with torch.no_grad():
            data = preprocessor(data, False)
        labels = np.array([int(sample.gt_label[0]) for sample in data['data_samples']])
        yield PreprocessedBatch(data['inputs'][:remaining].float().numpy(),
                                labels[:remaining])
        remaining -= len(labels)

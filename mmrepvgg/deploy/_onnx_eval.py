"""An exported classifier or segmentor (ONNX or OpenVINO IR) run by a config's own test loop
(``tools/deployment/test.py``), and the model-ready image batches of a config's dataset that
INT8 calibration and checks use."""
import copy
import os
from typing import Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmpretrain.structures import DataSample
from torch import Tensor, nn
from torch.nn import functional as F

from .._config_file import ConfigError
from ..registry import MODELS
from .onnx_runtime import LOAD_ERRORS, OnnxRuntimeModel


# Scoped: an earlier Runner of the process (an mmseg one) leaves its default scope current.
_CLS_DATA_PREPROCESSOR = 'mmpretrain.ClsDataPreprocessor'


def _data_preprocessor_cfg(cfg: Config) -> dict:
    """The ``data_preprocessor`` the Runner gives the config's model (model's, config's,
    else mmpretrain's default)."""
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    return {'type': _CLS_DATA_PREPROCESSOR, **copy.deepcopy(dict(preprocessor))}


def _runtime_model(model_file: str, threads: Optional[int], int8_kernels: str) -> nn.Module:
    if model_file.endswith('.xml'):
        from .openvino_runtime import OpenVINOModel  # the [openvino] extra
        return OpenVINOModel(model_file, threads)
    return OnnxRuntimeModel(model_file, threads, int8_kernels)


class _RuntimeClassifier(BaseModel):
    """A runtime (images ``(N, C, H, W)`` float32 in, logits out; ``input_size`` ``(H, W)``
    if fixed) behind mmengine's model interface; ``name``: what messages call it."""
    logits_shape = '(N, num_classes)'
    resize_to_file = False  # resize images of another size to the file's, or refuse them

    def __init__(self, runtime: nn.Module, name: str, data_preprocessor: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor or
                         dict(type=_CLS_DATA_PREPROCESSOR))
        self.name = name
        self.runtime = runtime

    def predictions(self, logits: Tensor, data_samples: Optional[list]) -> List[DataSample]:
        """What an mmpretrain head's ``predict`` returns for ``logits`` ``(N, classes)``."""
        scores = torch.softmax(logits, dim=1)
        labels = scores.argmax(dim=1, keepdim=True)
        samples = data_samples or [DataSample() for _ in range(len(logits))]
        return [sample.set_pred_score(score).set_pred_label(label)
                for sample, score, label in zip(samples, scores, labels)]

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'predict') -> list:
        if mode != 'predict':
            raise ValueError(f"{self.name} only predicts; got mode={mode!r}")
        data_size = tuple(inputs.shape[2:])
        input_size = getattr(self.runtime, 'input_size', None)
        if input_size is not None and data_size != input_size:
            if not self.resize_to_file:
                raise ConfigError(
                    f'{self.name} takes {input_size[0]}x{input_size[1]} '
                    f"images but the config's test pipeline makes {data_size[0]}x"
                    f'{data_size[1]}; export again with --shape {data_size[0]} '
                    f'{data_size[1]} (or without --shape: the export takes the pipeline size)')
            inputs = F.interpolate(inputs.float(), size=input_size, mode='bilinear',
                                   align_corners=False)
        logits = self.runtime(inputs.float())
        if logits.dim() != self.logits_shape.count(',') + 1 or len(logits) != len(inputs):
            raise ConfigError(
                f'{self.name} gives an output of shape {tuple(logits.shape)} for '
                f'{len(inputs)} images, not logits {self.logits_shape}; pass a model '
                'exported from this config by tools/deployment/pytorch2onnx.py')
        return self.predictions(logits, data_samples)


@MODELS.register_module()
class ExportedClassifier(_RuntimeClassifier):
    """An ONNX file or OpenVINO IR ``.xml`` written by ``tools/deployment/pytorch2onnx.py``
    behind mmengine's model interface (``threads``, ``int8_kernels``: see
    :class:`.onnx_runtime.OnnxRuntimeModel`)."""

    def __init__(self, model_file: str, data_preprocessor: Optional[dict] = None,
                 threads: Optional[int] = None, int8_kernels: str = 'auto'):
        super().__init__(_runtime_model(model_file, threads, int8_kernels), model_file,
                         data_preprocessor)
        self.model_file = model_file


@MODELS.register_module()
class ExportedSegmentor(ExportedClassifier):
    """An exported segmentor (logits ``(N, num_classes, H, W)``) predicting as mmseg's do;
    ``resize_to_file``: where the test pipeline keeps each image's size (ADE20K's), each
    image is resized to the file's fixed size, as its logits are back to the image's."""
    logits_shape = '(N, num_classes, H, W)'

    def __init__(self, model_file: str, data_preprocessor: Optional[dict] = None,
                 threads: Optional[int] = None, int8_kernels: str = 'auto',
                 resize_to_file: bool = False):
        super().__init__(model_file, data_preprocessor, threads, int8_kernels)
        self.resize_to_file = resize_to_file

    def predictions(self, logits: Tensor, data_samples: Optional[list]) -> list:
        # Resized to each original image as the shipped heads do (bilinear, corners not
        # aligned); the class map is (1, H, W).
        for sample, image_logits in zip(data_samples, logits):
            image_logits = F.interpolate(image_logits[None], size=sample.ori_shape,
                                         mode='bilinear', align_corners=False)[0]
            sample.seg_logits = PixelData(data=image_logits)
            sample.pred_sem_seg = PixelData(data=image_logits.argmax(dim=0, keepdim=True))
        return data_samples


def runtime_classifier(cfg: Config, runtime: nn.Module, name: str) -> _RuntimeClassifier:
    """``runtime`` (images in, logits out) with the config model's ``data_preprocessor``,
    to stand in for it as a Runner's model."""
    return _RuntimeClassifier(runtime, name, _data_preprocessor_cfg(cfg))


def exported_model_test_config(cfg: Config, model_file: str, threads: Optional[int] = None,
                               int8_kernels: str = 'auto') -> Config:
    """``cfg`` (in place) with its model replaced by the exported ``model_file`` (an
    ``.xml`` OpenVINO IR, else ONNX) in an :class:`ExportedClassifier` (an mmseg config:
    :class:`ExportedSegmentor`). Raises ConfigError for a ``model_file`` missing, empty
    or not loadable, MissingExtraError for an IR without the ``[openvino]`` extra."""
    if not os.path.isfile(model_file):
        raise ConfigError(f'{model_file}: no such model file; check the path')
    if os.path.getsize(model_file) == 0:
        raise ConfigError(f'{model_file}: the file is empty (0 bytes); export it again '
                          'with tools/deployment/pytorch2onnx.py')
    runtime = 'OpenVINO' if model_file.endswith('.xml') else 'ONNX Runtime'
    try:  # fail here, in one line
        _runtime_model(model_file, threads, int8_kernels)
    except (RuntimeError, *LOAD_ERRORS) as error:  # OpenVINO raises RuntimeError
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f'{model_file}: {runtime} cannot load it ({line}); pass a file '
                          'written by tools/deployment/pytorch2onnx.py') from error
    cfg.model = dict(type='mmrepvgg.ExportedClassifier', model_file=model_file,
                     data_preprocessor=_data_preprocessor_cfg(cfg), threads=threads,
                     int8_kernels=int8_kernels)
    if cfg.get('default_scope') == 'mmseg':
        cfg.model.update(type='mmrepvgg.ExportedSegmentor',
                         resize_to_file=pipeline_image_size(cfg) is None)
    cfg.load_from = None
    return cfg


def pipeline_image_size(cfg: Config) -> Optional[Tuple[int, int]]:
    """The ``(H, W)`` every image has after the config's test pipeline (a fixed ``Resize``
    or a ``CenterCrop``), or None when it depends on the image."""
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
    """mmcv's ``scale`` / ``crop_size``, an int (square) or ``(w, h)``, as ``(w, h)``."""
    value = (value, value) if isinstance(value, int) else value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(side, int) for side in value):
        return int(value[0]), int(value[1])
    return None


class _PreprocessedBatch(NamedTuple):
    images: np.ndarray  # (N, C, H, W) float32, as the model receives them
    labels: np.ndarray  # (N, ), or a segmentation dataset's label maps (N, H, W)


def preprocessed_batches(cfg: Config, dataloader_key: str, num_images: int,
                         shuffle: bool, pipeline_from: Optional[str] = None,
                         batch_size: Optional[int] = None) -> Iterator[_PreprocessedBatch]:
    """Batches of the first ``num_images`` images of ``cfg[dataloader_key]``'s dataset
    through its pipeline and the model's ``data_preprocessor``, in the main process;
    ``shuffle``: in a seeded random order; ``pipeline_from``: with that dataloader's pipeline
    instead (e.g. ``'test_dataloader'``: no augmentation). ConfigError: the dataloader is
    missing, or its data unreadable."""
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
    segmentation = cfg.get('default_scope') == 'mmseg'
    with DefaultScope.overwrite_default_scope('mmseg' if segmentation else 'mmrepvgg'):
        try:
            loader = Runner.build_dataloader(loader_cfg, seed=0)
        except (OSError, KeyError, ValueError) as error:
            message = str(error).strip().strip('"')
            raise ConfigError(f'{cfg.filename}: cannot read the data of {dataloader_key} '
                              f'({message}); check data_root or prepare the data first '
                              '(the digits demo: python tools/demo.py)') from error
        preprocessor = MODELS.build(_data_preprocessor_cfg(cfg)).eval()
    remaining = num_images
    for data in loader:
        if remaining <= 0:
            return
        with torch.no_grad():
            data = preprocessor(data, False)
        labels = np.array([sample.gt_sem_seg.data[0].numpy() if segmentation else
                           int(sample.gt_label[0]) for sample in data['data_samples']])
        yield _PreprocessedBatch(data['inputs'][:remaining].float().numpy(),
                                 labels[:remaining])
        remaining -= len(labels)

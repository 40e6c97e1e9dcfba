"""Run an exported ONNX classifier on a config's own data, as mmengine's Runner runs the
PyTorch model: same dataloader, same ``data_preprocessor`` (normalisation), same evaluator.

- :class:`OnnxRuntimeClassifier` stands in for the config's model in a Runner's test
  loop (``tools/deployment/test.py``);
- :func:`preprocessed_batches` yields model-ready image batches of a config's dataset
  (INT8 calibration and agreement checks).
"""
import copy
import os
from typing import Iterator, List, NamedTuple, Optional

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


@MODELS.register_module()
class OnnxRuntimeClassifier(BaseModel):
    """An ONNX classifier run by ONNX Runtime (CPU) behind mmengine's model interface.

    Args:
        onnx_file: an ONNX file whose first input takes the preprocessed images
            ``(N, C, H, W)`` float32 and whose first output is the logits
            ``(N, num_classes)`` (what ``tools/deployment/pytorch2onnx.py`` writes, FP32
            or INT8).
        data_preprocessor: normalisation and batching, as for the PyTorch model (see
            :func:`data_preprocessor_cfg`).
        num_threads: ONNX Runtime intra-op threads (default: ONNX Runtime's).
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None,
                 num_threads: Optional[int] = None):
        super().__init__(data_preprocessor=data_preprocessor or
                         dict(type='ClsDataPreprocessor'))
        self.session = onnxruntime_session(onnx_file, num_threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'predict') -> List[DataSample]:
        if mode != 'predict':
            raise ValueError(f"an ONNX Runtime model only predicts; got mode={mode!r}")
        logits = self.session.run(None, {self.input_name: inputs.float().numpy()})[0]
        return logits_to_predictions(torch.from_numpy(np.asarray(logits)), data_samples)


def onnx_test_config(cfg: Config, onnx_file: str, num_threads: Optional[int] = None
                     ) -> Config:
    """``cfg`` (in place) with its model replaced by :class:`OnnxRuntimeClassifier` on
    ``onnx_file``, and no checkpoint to load; dataloader and evaluator are unchanged.

    Raises:
        ConfigError: ``onnx_file`` is not a model ONNX Runtime can load.
    """
    if not os.path.isfile(onnx_file):
        raise ConfigError(f'{onnx_file}: no such ONNX file; check the path')
    try:
        onnxruntime_session(onnx_file, num_threads)  # fail here, in one line, not in Runner
    except (onnxruntime.capi.onnxruntime_pybind11_state.Fail,
            onnxruntime.capi.onnxruntime_pybind11_state.InvalidGraph,
            onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f'{onnx_file}: ONNX Runtime cannot load it ({first_line}); pass '
                          'a file written by tools/deployment/pytorch2onnx.py') from error
    cfg.model = dict(type='OnnxRuntimeClassifier', onnx_file=onnx_file,
                     data_preprocessor=data_preprocessor_cfg(cfg), num_threads=num_threads)
    cfg.load_from = None
    return cfg


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

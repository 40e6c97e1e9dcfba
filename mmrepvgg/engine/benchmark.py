"""Inference speed of the train and deploy forms of the same weights."""
import statistics
import time
from typing import NamedTuple

import torch
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from ..checkpoint import load_checkpoint_file, unwrap_state_dict
from ..registry import MODELS
from .config import load_repvgg_config
from .runner import check_checkpoint_fits


def load_model(config_path: str, checkpoint_path: str) -> nn.Module:
    """The model of ``config_path`` with exactly the tensors of ``checkpoint_path``, in
    eval mode on the CPU.

    Raises:
        ConfigError: see :func:`load_repvgg_config`.
        CheckpointError: unreadable file, or tensors that do not fit the model.
    """
    cfg = load_repvgg_config(config_path)
    with DefaultScope.overwrite_default_scope('mmrepvgg'):
        model = MODELS.build(cfg.model)
    check_checkpoint_fits(model, checkpoint_path)
    model.load_state_dict(unwrap_state_dict(load_checkpoint_file(checkpoint_path)))
    return model.eval()


class ThroughputComparison(NamedTuple):
    """Images per second of both forms on the same batch; ``speedup`` = deploy / train."""
    train_images_per_s: float
    deploy_images_per_s: float
    batch_shape: tuple
    rounds: int

    @property
    def speedup(self) -> float:
        return self.deploy_images_per_s / self.train_images_per_s


@torch.inference_mode()
def _seconds_per_forward(model: nn.Module, images: Tensor) -> float:
    start = time.perf_counter()
    model(images, mode='tensor')
    return time.perf_counter() - start


def compare_throughput(train_model: nn.Module,
                       deploy_model: nn.Module,
                       images: Tensor,
                       rounds: int = 10,
                       warmup: int = 2) -> ThroughputComparison:
    """Time full-batch forwards of both classifiers, alternating between them.

    Alternating rounds expose both forms to the same background load of a shared machine;
    the median of ``rounds`` timings discards rounds disturbed by other processes.

    Args:
        train_model, deploy_model: mmpretrain classifiers in eval mode (called with
            ``mode='tensor'``).
        images: the batch both forms see, ``(N, C, H, W)`` after preprocessing.
        rounds: timed forwards per form. Defaults to 10.
        warmup: untimed forwards per form first (allocator, oneDNN kernel selection).
            Defaults to 2.
    """
    for _ in range(warmup):
        _seconds_per_forward(train_model, images)
        _seconds_per_forward(deploy_model, images)
    train_seconds, deploy_seconds = [], []
    for _ in range(rounds):
        train_seconds.append(_seconds_per_forward(train_model, images))
        deploy_seconds.append(_seconds_per_forward(deploy_model, images))
    num_images = images.shape[0]
    return ThroughputComparison(num_images / statistics.median(train_seconds),
                                num_images / statistics.median(deploy_seconds),
                                tuple(images.shape), rounds)

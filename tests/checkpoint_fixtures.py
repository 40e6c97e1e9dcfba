"""Shared builders for the checkpoint tests: a classifier config file and trained-looking
checkpoints (random BN statistics, so a fusion that ignores them would be caught)."""
import hashlib
import os
from pathlib import Path

import torch
from mmengine.config import Config

from mmrepvgg.apis.convert import build_train_model
from mmrepvgg.models import repvgg_classifier_cfg
from lab.synthetic import randomize_batch_norms_

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_classifier_config(folder: Path, arch: str = 'A0', num_classes: int = 10,
                            deploy: bool = False, name: str = None) -> Path:
    """A RepVGG ImageClassifier config file in ``folder``; returns its path."""
    path = Path(folder) / (name or f'repvgg-{arch}_{num_classes}cls'
                           f'{"_deploy" if deploy else ""}.py')
    Config(dict(default_scope='mmrepvgg',
                custom_imports=dict(imports=['mmrepvgg'], allow_failed_imports=False),
                model=repvgg_classifier_cfg(arch, deploy, num_classes))).dump(str(path))
    return path


def trained_classifier(config_path: Path, seed: int = 0) -> torch.nn.Module:
    """The train-form model of ``config_path`` with random BN statistics, eval mode."""
    torch.manual_seed(seed)
    return randomize_batch_norms_(build_train_model(str(config_path)), seed=seed).eval()


def save_train_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Save as mmengine does: ``{'state_dict': ..., 'meta': ...}``."""
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, path)
    return path


def file_fingerprint(path: Path) -> tuple:
    """(sha256, mtime_ns) of a file: both must stay put for a file that is only read."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns

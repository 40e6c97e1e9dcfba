"""Checkpoints: one reader, one way into a model, atomic writing (docs/checkpoints.md)."""
from . import pretrained  # noqa: F401  (registers mmrepvgg.Pretrained)
from .errors import CheckpointError
from .fitting import FittedState, load_checkpoint
from ._reader import load_checkpoint_file
from ._writing import atomic_output, check_output, save_checkpoint_atomic

__all__ = ['CheckpointError', 'FittedState', 'load_checkpoint', 'load_checkpoint_file',
           'atomic_output', 'check_output', 'save_checkpoint_atomic']

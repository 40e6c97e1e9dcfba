"""Checkpoints: one reader, one way into a model, atomic writing, source layouts.

Public: :func:`load_checkpoint` (read and fit weights into a model, in a mode) and its
:class:`FittedState`, :func:`load_checkpoint_file` (read a path or URL as inert data),
the atomic writers :func:`save_checkpoint_atomic`, :func:`atomic_output` and
:func:`check_output`, and :class:`CheckpointError`. The modules:

- :mod:`._reader`: every load of the project; reads a path, URL or .safetensors file as
  inert data, executing nothing stored in it (:mod:`._remote` downloads URLs); its pickles
  are read by :mod:`._pickle_machine`.
- :mod:`._writing`: write atomically, never over an input, never leaving partial files.
- :mod:`._layouts`: the mmrepvgg/mmpretrain, official and timm key layouts as data.
- :mod:`._inspection`: the architecture and health a state dict reveals.
- :mod:`.fitting`: :func:`load_checkpoint`: whether a checkpoint fits a model, what to
  load, what does not fit.
- :mod:`.pretrained`: the ``mmrepvgg.Pretrained`` initializer configs start from weights with.
"""
from . import pretrained  # noqa: F401  (registers mmrepvgg.Pretrained)
from .errors import CheckpointError
from .fitting import FittedState, load_checkpoint
from ._reader import load_checkpoint_file
from ._writing import atomic_output, check_output, save_checkpoint_atomic

__all__ = ['CheckpointError', 'FittedState', 'load_checkpoint', 'load_checkpoint_file',
           'atomic_output', 'check_output', 'save_checkpoint_atomic']

"""Checkpoints: one reader, one fitting, atomic writing, source layouts.

- :mod:`.reader`: every load of the project; reads a path, URL or .safetensors file as
  inert data, executing nothing stored in it (:mod:`.remote` downloads URLs); its pickles
  are read by :mod:`.pickle_machine`.
- :mod:`.writing`: write atomically, never over an input, never leaving partial files.
- :mod:`.layouts`: the mmrepvgg/mmpretrain, official and timm key layouts as data.
- :mod:`.inspection`: the architecture and health a state dict reveals.
- :mod:`.fitting`: whether a checkpoint fits a model, what to load, what does not fit.
- :mod:`.pretrained`: the ``mmrepvgg.Pretrained`` initializer configs start from weights with.
"""
from .errors import CheckpointError
from .fitting import (FIT_MODES, FittedState, fit_project_state, load_fitted_state,
                      read_project_state, repvgg_prefix)
from .inspection import (ArchShape, arch_shape_of_state, describe_arch,
                         describe_state_arch, first_unusable_tensor)
from .layouts import (LAYOUTS, KeyLayout, LayoutError, ProjectState, detect_layout,
                      from_project_layout, to_project_layout, unwrap_state_dict)
from .pretrained import PretrainedInit
from .reader import load_checkpoint_file, read_checkpoint
from .remote import checkpoint_local_path
from .writing import atomic_output, check_output, save_checkpoint_atomic

__all__ = [
    'FIT_MODES', 'FittedState', 'fit_project_state', 'load_fitted_state',
    'read_project_state', 'repvgg_prefix', 'ArchShape', 'arch_shape_of_state',
    'describe_arch', 'describe_state_arch', 'first_unusable_tensor', 'LAYOUTS', 'KeyLayout',
    'LayoutError', 'ProjectState', 'detect_layout', 'from_project_layout',
    'to_project_layout', 'unwrap_state_dict', 'CheckpointError', 'atomic_output',
    'check_output', 'checkpoint_local_path', 'load_checkpoint_file', 'read_checkpoint',
    'save_checkpoint_atomic', 'PretrainedInit'
]

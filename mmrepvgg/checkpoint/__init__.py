"""Checkpoints: safe reading, atomic writing, source layouts, fitting to a model.

- :mod:`.safe_io`: read without executing anything from the pickle; write atomically.
- :mod:`.layouts`: the mmrepvgg/mmpretrain, official and timm key layouts as data.
- :mod:`.inspection`: the architecture and health a state dict reveals.
- :mod:`.fitting`: whether a checkpoint fits a model, what to load, what does not fit.
"""
from .fitting import (FIT_MODES, FittedState, fit_project_state, load_fitted_state,
                      read_project_state, repvgg_prefix)
from .inspection import (ArchShape, arch_shape_of_state, describe_arch,
                         first_unusable_tensor)
from .layouts import (LAYOUTS, KeyLayout, LayoutError, ProjectState, detect_layout,
                      from_project_layout, to_project_layout, unwrap_state_dict)
from .safe_io import (MMENGINE_CHECKPOINT_GLOBALS, CheckpointError,
                      allow_mmengine_checkpoint_globals, atomic_output,
                      load_checkpoint_file, save_checkpoint_atomic)

__all__ = [
    'FIT_MODES', 'FittedState', 'fit_project_state', 'load_fitted_state',
    'read_project_state', 'repvgg_prefix', 'ArchShape', 'arch_shape_of_state',
    'describe_arch', 'first_unusable_tensor', 'LAYOUTS', 'KeyLayout', 'LayoutError',
    'ProjectState', 'detect_layout', 'from_project_layout', 'to_project_layout',
    'unwrap_state_dict', 'MMENGINE_CHECKPOINT_GLOBALS', 'CheckpointError',
    'allow_mmengine_checkpoint_globals', 'atomic_output', 'load_checkpoint_file',
    'save_checkpoint_atomic'
]

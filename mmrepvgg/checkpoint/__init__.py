"""Checkpoints: safe reading, atomic writing, source layouts and their key mapping.

- :mod:`.safe_io`: read without executing anything from the pickle; write atomically.
- :mod:`.layouts`: the mmrepvgg/mmpretrain, official and timm key layouts as data.
- :mod:`.inspection`: the architecture and health a state dict reveals.
"""
from .inspection import ArchShape, arch_shape_of_state, describe_arch, first_non_finite
from .layouts import (LAYOUTS, KeyLayout, LayoutError, ProjectState, detect_layout,
                      from_project_layout, to_project_layout, unwrap_state_dict)
from .safe_io import (MMENGINE_CHECKPOINT_GLOBALS, CheckpointError,
                      allow_mmengine_checkpoint_globals, atomic_output,
                      load_checkpoint_file, save_checkpoint_atomic)

__all__ = [
    'ArchShape', 'arch_shape_of_state', 'describe_arch', 'first_non_finite', 'LAYOUTS',
    'KeyLayout', 'LayoutError', 'ProjectState', 'detect_layout', 'from_project_layout',
    'to_project_layout', 'unwrap_state_dict', 'MMENGINE_CHECKPOINT_GLOBALS',
    'CheckpointError', 'allow_mmengine_checkpoint_globals', 'atomic_output',
    'load_checkpoint_file',
    'save_checkpoint_atomic'
]

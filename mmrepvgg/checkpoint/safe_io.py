"""Safe checkpoint reading and atomic checkpoint writing.

Checkpoints are pickles; ``torch.load(weights_only=True)`` only rebuilds tensors, plain
containers and the globals allow-listed here, so reading one never runs code from it.
"""
import os
import tempfile
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# What mmengine's Runner puts in its checkpoints besides tensors: the message hub's
# HistoryBuffer (which holds numpy arrays and scalars).
MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    np.ndarray,
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
    np.dtypes.Int32DType,
    np.dtypes.BoolDType,
]


def allow_mmengine_checkpoint_globals() -> None:
    """Allow-list :data:`MMENGINE_CHECKPOINT_GLOBALS` for every ``weights_only`` load,
    including those mmengine's Runner makes for ``load_from`` and ``resume``."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def load_checkpoint_file(path: str) -> Any:
    """Read a checkpoint onto the CPU without executing anything stored in it."""
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint file; check the path')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch raises several types for the same causes
        raise CheckpointError(
            f'{path}: not a readable PyTorch checkpoint (truncated, corrupt or of another '
            f'format: {str(error).splitlines()[0]}); re-download or re-save it') from error


def save_checkpoint_atomic(checkpoint: Any, path: str, overwrite: bool = False) -> None:
    """Write ``checkpoint`` to ``path`` so that ``path`` is never half-written.

    The data goes to a temporary file in the same folder, is flushed to disk, then
    renamed over ``path`` (an atomic step on POSIX). An interrupted save leaves either no
    file or the previous one.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f'{path} exists; pass --force (overwrite=True) to replace it')
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary_path = tempfile.mkstemp(
        dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.partial')
    try:
        with os.fdopen(handle, 'wb') as stream:
            torch.save(checkpoint, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary_path, path)
    except BaseException:
        os.unlink(temporary_path)
        raise

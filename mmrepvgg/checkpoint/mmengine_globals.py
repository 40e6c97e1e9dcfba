"""What mmengine checkpoints hold besides tensors, admitted only inside our own loads.

Found by saving a Runner checkpoint and listing
``torch.serialization.get_unsafe_globals_in_checkpoint``: the message hub's
``HistoryBuffer`` with its numpy arrays and scalars, and the statistics functions of
``HistoryBuffer`` that the pickle reaches as ``builtins.getattr(HistoryBuffer, 'mean')``.
A pickled HistoryBuffer is loaded as :class:`PickledHistoryBuffer`.

Nothing here is ever added to torch's process-wide allow-list: a plain ``builtins.getattr``
there reaches ``getattr(getattr, '__self__')`` (the builtins module), then ``eval``, which
``torch._tensor._rebuild_from_type_v2(func, ...)`` calls. :func:`mmengine_safe_globals`
admits the list for the duration of one load, with ``builtins.getattr`` replaced by
:func:`history_buffer_statistic`, which can return nothing but those four functions.
"""
import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .errors import UnsafePickleError

# The statistics HistoryBuffer registers itself; methods registered later by user code
# are the process's own, never something a file may name.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


class PickledHistoryBuffer(HistoryBuffer):
    """What a pickled ``HistoryBuffer`` becomes while loading: its state kept as is.

    ``HistoryBuffer.__setstate__`` merges the pickle's ``statistics_methods`` into the
    class-wide registry, so a file could make any allow-listed callable every buffer's
    ``'mean'`` for the rest of the process. :mod:`.plain_data` then builds a real
    HistoryBuffer from the arrays alone.
    """

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def history_buffer_statistic(owner: Any, name: str) -> Callable:
    """The stand-in for ``builtins.getattr`` in mmengine checkpoints.

    Args:
        owner: the ``HistoryBuffer`` class (loaded as :class:`PickledHistoryBuffer`) or
            an instance.
        name: one of :data:`HISTORY_BUFFER_STATISTICS`.

    Returns:
        ``getattr(owner, name)``: a statistics function of HistoryBuffer.

    Raises:
        UnsafePickleError: for any other owner or name (``__self__``, ``eval``, ...).
    """
    owner_class = owner if isinstance(owner, type) else type(owner)
    is_history_buffer = owner_class in (HistoryBuffer, PickledHistoryBuffer)
    if not (is_history_buffer and type(name) is str and name in HISTORY_BUFFER_STATISTICS):
        raise UnsafePickleError(f'it calls builtins.getattr(..., {name!r}) outside the '
                                'HistoryBuffer statistics mmengine stores')
    return getattr(owner, name)


def _numpy_reconstruct_name(numpy_package: str) -> tuple:
    return (np._core.multiarray._reconstruct, f'{numpy_package}.multiarray._reconstruct')


def _numpy_scalar_name(numpy_package: str) -> tuple:
    return (np._core.multiarray.scalar, f'{numpy_package}.multiarray.scalar')


# (object) or (object, 'the module.name a pickle uses for it'). NumPy 1.x wrote
# ``numpy.core.*`` (most mmcls-era and older mmengine files), NumPy 2 writes ``numpy._core.*``:
# the same functions, which only build an empty array or a scalar from bytes.
MMENGINE_CHECKPOINT_GLOBALS = [
    (PickledHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (history_buffer_statistic, 'builtins.getattr'),
    _numpy_reconstruct_name('numpy._core'),
    _numpy_reconstruct_name('numpy.core'),
    _numpy_scalar_name('numpy._core'),
    _numpy_scalar_name('numpy.core'),
    np.ndarray,
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
    np.dtypes.Int32DType,
    np.dtypes.BoolDType,
]


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Admit :data:`MMENGINE_CHECKPOINT_GLOBALS` to ``torch.load(weights_only=True)`` for
    the body only, then restore torch's allow-list exactly as it was.

    Not ``torch.serialization.safe_globals``: on exit it removes its entries even where the
    user had added the same ones before. The allow-list is process-wide, so a load in
    another thread during the body sees these globals too (all inert, see above).
    """
    previous = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(previous)

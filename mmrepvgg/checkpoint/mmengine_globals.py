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
import threading
from typing import Any, Callable, Iterator

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .errors import UnsafePickleError
from .unpickling import NUMPY_CALLABLES

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


# (object, 'the module.name a pickle uses for it'): numpy's as the fallback unpickler
# admits them (the same narrowed ``_reconstruct``), under both NumPy 1.x and 2 names.
MMENGINE_CHECKPOINT_GLOBALS = [
    (PickledHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (history_buffer_statistic, 'builtins.getattr'),
    (np.ndarray, 'numpy.ndarray'),
    *[(value, name) for name, value in NUMPY_CALLABLES.items()],
]


_ALLOW_LIST_LOCK = threading.Lock()


@contextlib.contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Admit :data:`MMENGINE_CHECKPOINT_GLOBALS` to ``torch.load(weights_only=True)`` for
    the body only, then restore torch's allow-list exactly as it was.

    Not ``torch.serialization.safe_globals``: on exit it removes its entries even where the
    user had added the same ones before. The allow-list is process-wide: our loads take
    turns (two overlapping ones would restore each other's additions), and a plain
    ``torch.load`` in another thread during the body sees these globals too (all inert,
    see above).
    """
    with _ALLOW_LIST_LOCK:
        previous = torch.serialization.get_safe_globals()
        torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
        try:
            yield
        finally:
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(previous)

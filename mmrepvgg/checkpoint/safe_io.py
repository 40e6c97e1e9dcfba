"""Safe checkpoint reading and atomic checkpoint writing.

Checkpoints are pickles, and unpickling can call any function the file names. Reading here
never does:

1. ``torch.load(weights_only=True)`` rebuilds tensors, plain containers and the globals
   allow-listed by :func:`allow_mmengine_checkpoint_globals` (applied at ``import
   mmrepvgg``, so mmengine's Runner ``load_from`` and ``resume`` benefit too).
2. Files that step cannot rebuild although they are data (the official training script
   stores its yacs ``CfgNode``, a dict subclass, whose items torch refuses to set) are read
   by :class:`RestrictedUnpickler`: it calls only the functions step 1 allows, rebuilds
   every other object as an inert :class:`UnknownObject`, and refuses the file as soon as
   its pickle would *call* anything else (``os.system`` in a ``__reduce__``, ...).

There is no third step: nothing is ever read with an unrestricted unpickler.
"""
import builtins
import contextlib
import os
import pickle
import tempfile
import types
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
import torch._weights_only_unpickler as weights_only_unpickler
from mmengine.logging import HistoryBuffer

# What mmengine's Runner puts in its checkpoints besides tensors, found by saving and
# resuming a Runner checkpoint (torch.serialization.get_unsafe_globals_in_checkpoint): the
# message hub's HistoryBuffer with its numpy arrays and scalars, and the buffer's
# ``statistics_methods``, bound methods pickled as ``getattr(buffer, 'mean')``. getattr
# is harmless to weights_only loading: the bound methods it returns can never be called by
# the unpickler, which calls allow-listed functions only.
MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    builtins.getattr,
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


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle would call a function that is not allow-listed."""


class UnknownObject(dict):
    """An object of a class the reader does not trust, kept as inert data.

    Holds the items the pickle set on it (it is a dict, as the yacs ``CfgNode`` it most
    often replaces), and ``pickled_class`` (``'module.name'``), ``pickled_args`` and
    ``pickled_state`` for inspection. Never runs code of the class it stands for.
    """
    pickled_class = 'unknown'

    def __new__(cls, *args, **kwargs):
        # NEWOBJ (protocol 2+) only calls __new__: creating an object is data.
        instance = super().__new__(cls)
        instance.pickled_args = args
        instance.pickled_state = None
        return instance

    def __init__(self, *args, **kwargs):
        # Only a call `cls(*args)` (REDUCE, INST, OBJ) reaches __init__: that is code.
        raise UnsafePickleError(f'it calls {self.pickled_class}(...)')

    def __setstate__(self, state: Any) -> None:
        # BUILD must not setattr arbitrary names (``__class__``) on the placeholder.
        self.pickled_state = state

    def __reduce__(self):
        return (dict, (dict(self), ))


def _allowed_globals() -> Dict[str, Any]:
    """``'module.name' -> object`` of every global weights_only loading may call, without
    ``getattr`` (the restricted unpickler would call what it returns)."""
    allowed = {**weights_only_unpickler._get_allowed_globals(),
               **weights_only_unpickler._get_user_allowed_globals()}
    return {name: value for name, value in allowed.items() if value is not builtins.getattr}


class RestrictedUnpickler(pickle._Unpickler):
    """A pure-Python unpickler that never imports a module and never calls a function
    outside :func:`_allowed_globals`; other classes become :class:`UnknownObject` types.

    Raises:
        UnsafePickleError: the pickle calls a global that is not allow-listed.
    """
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed = _allowed_globals()
        self.allowed_ids = {id(value) for value in self.allowed.values()}
        self.placeholders: Dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle would map them
            module, name = pickle._compat_pickle.NAME_MAPPING.get(
                (module, name), (pickle._compat_pickle.IMPORT_MAPPING.get(module, module),
                                 name))
        qualified_name = f'{module}.{name}'
        if qualified_name in self.allowed:
            return self.allowed[qualified_name]
        if qualified_name not in self.placeholders:
            self.placeholders[qualified_name] = type(
                name, (UnknownObject, ), dict(pickled_class=qualified_name,
                                              __module__=__name__))
        return self.placeholders[qualified_name]

    def load_reduce(self) -> None:
        args = self.stack.pop()
        function = self.stack[-1]
        if isinstance(function, type) and issubclass(function, UnknownObject):
            raise UnsafePickleError(f'it calls {function.pickled_class}(...)')
        if id(function) not in self.allowed_ids:
            raise UnsafePickleError(f'it calls {function!r}, which is not allow-listed')
        self.stack[-1] = function(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce


def _restricted_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose unpickling is restricted."""
    module = types.ModuleType('mmrepvgg_restricted_pickle')
    module.Unpickler = RestrictedUnpickler
    module.UnpicklingError = pickle.UnpicklingError
    module.load = lambda stream, **kwargs: RestrictedUnpickler(stream, **kwargs).load()
    return module


# How every file torch.save writes begins: a zip archive (torch >= 1.6) or a pickle.
CHECKPOINT_MAGICS = (b'PK\x03\x04', b'\x80')


def _first_sentence(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].split('. ')[0].rstrip('.') if lines else type(error).__name__


def _check_readable(path: str) -> None:
    if os.path.isdir(path):
        raise CheckpointError(f'{path}: is a folder, not a checkpoint file; pass the '
                              '.pth file inside it')
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint file; check the path')
    try:
        with open(path, 'rb') as stream:
            head = stream.read(16)
    except OSError as error:
        raise CheckpointError(f'{path}: cannot be read ({error.strerror}); check its '
                              'permissions') from error
    if not head:
        raise CheckpointError(f'{path}: is empty (0 bytes); re-download or re-save it')
    if not head.startswith(CHECKPOINT_MAGICS):
        raise CheckpointError(f'{path}: not a PyTorch checkpoint (it starts with '
                              f'{head[:8]!r}); pass the .pth file written by torch.save')


def load_checkpoint_file(path: str) -> Any:
    """Read a checkpoint onto the CPU without executing anything stored in it.

    Tries ``torch.load(weights_only=True)``, then :class:`RestrictedUnpickler` for data
    that step cannot rebuild (see the module docstring).

    Raises:
        CheckpointError: missing, unreadable, truncated or non-checkpoint file, or a
            pickle that would call a function that is not allow-listed.
    """
    _check_readable(path)
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        weights_only_error: Optional[BaseException] = error
    except Exception as error:  # torch raises several types for the same causes
        raise _unreadable(path, error) from error
    try:
        return torch.load(path, map_location='cpu', weights_only=False,
                          pickle_module=_restricted_pickle_module())
    except UnsafePickleError as error:
        raise CheckpointError(
            f'{path}: refused, {error} while loading, which no checkpoint needs; it may be '
            'malicious, do not load it elsewhere with weights_only=False') from error
    except Exception as error:  # the restricted reader fails like weights_only did
        raise _unreadable(path, weights_only_error) from error


def _unreadable(path: str, error: BaseException) -> CheckpointError:
    return CheckpointError(f'{path}: truncated or corrupt checkpoint ({_first_sentence(error)});'
                           ' re-download or re-save it')


@contextlib.contextmanager
def atomic_output(path: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder to write to; on success, flush it to
    disk and rename it to ``path`` (an atomic step on POSIX).

    If the body raises (or the process dies), ``path`` keeps its previous content or stays
    absent, and the temporary file is removed (or, after a kill, left as a hidden
    ``.NAME.*.partial`` file that is never mistaken for the output).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked before the
            body runs, so no work is wasted).
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f'{path} exists; pass --force (overwrite=True) to replace it')
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary_path = tempfile.mkstemp(
        dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.partial')
    os.close(handle)
    try:
        yield temporary_path
        with open(temporary_path, 'rb+') as stream:
            os.fsync(stream.fileno())
        os.replace(temporary_path, path)
    finally:
        if os.path.exists(temporary_path):
            os.unlink(temporary_path)


def save_checkpoint_atomic(checkpoint: Any, path: str, overwrite: bool = False) -> None:
    """``torch.save(checkpoint, path)`` through :func:`atomic_output`: ``path`` is never
    half-written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_output(path, overwrite) as temporary_path:
        with open(temporary_path, 'wb') as stream:
            torch.save(checkpoint, stream)

"""A restricted unpickler for checkpoints ``torch.load(weights_only=True)`` cannot rebuild
although they are data (the official RepVGG training script stores its yacs ``CfgNode``,
a dict subclass, whose items torch refuses to set).

It calls only the functions in :data:`AUDITED_CALLABLES`, none of which calls or looks up
anything its arguments name; every other class named by the pickle becomes an inert
:class:`UnknownObject`, and the file is refused as soon as the pickle would call one.
The opcodes that reach objects' methods (BUILD, NEWOBJ, SETITEM(S), APPEND(S), ADDITEMS)
are narrowed to the types this reader itself creates.
"""
import codecs
import collections
import pickle
import types
from typing import Any, Callable, Dict

import numpy as np
import torch

from .errors import UnsafePickleError


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


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                    metadata=None) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage) or backward_hooks:
        raise UnsafePickleError('it rebuilds a tensor from something other than a storage '
                                'of the archive, or with backward hooks')
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                           requires_grad, backward_hooks, metadata)


def _empty_ordered_dict(*args) -> collections.OrderedDict:
    if args:
        raise UnsafePickleError('it calls collections.OrderedDict with arguments')
    return collections.OrderedDict()


def _reconstruct_ndarray(subtype, shape, dtype_code) -> np.ndarray:
    if subtype is not np.ndarray or tuple(shape) != (0, ):
        raise UnsafePickleError('it calls numpy _reconstruct other than as ndarray pickles do')
    return np._core.multiarray._reconstruct(np.ndarray, (0, ), dtype_code)


def _encode_latin1(text, encoding) -> bytes:
    if type(text) is not str or encoding != 'latin1':
        raise UnsafePickleError('it calls _codecs.encode other than for latin1 bytes')
    return codecs.encode(text, 'latin1')


def _plain_items(factory: Callable) -> Callable:
    def build(values=()):
        if not all(type(value) in (int, float, str, bool) for value in values):
            raise UnsafePickleError(f'it calls {factory.__name__} with non-plain items')
        return factory(values)
    return build


# NumPy's pickle globals, by both names: NumPy 2 writes ``numpy._core.*``, NumPy 1.x (most
# mmcls-era and older mmengine files) ``numpy.core.*``; dtype instances are rebuilt through
# their DType classes.
NUMPY_CALLABLES: Dict[str, Callable] = {
    **{f'{package}.multiarray._reconstruct': _reconstruct_ndarray
       for package in ('numpy._core', 'numpy.core')},
    **{f'{package}.multiarray.scalar': np._core.multiarray.scalar
       for package in ('numpy._core', 'numpy.core')},
    'numpy.dtype': np.dtype,
    **{f'numpy.dtypes.{name}': value for name, value in vars(np.dtypes).items()
       if isinstance(value, type) and issubclass(value, np.dtype)},
}

# The audit: every callable a fallback pickle may call, by the name pickles use, and why it
# cannot run code. None calls an argument or looks up an attribute an argument names; the
# narrowed ones check their arguments first.
# - torch._utils._rebuild_tensor_v2: a view (Tensor.set_) over a storage of the archive;
#   refuses non-storages and backward hooks (autograd would call those later).
# - collections.OrderedDict: empty only; items arrive by SETITEMS (a plain dict store).
# - torch.Size, builtins.set, builtins.frozenset: containers of plain numbers/strings.
# - numpy _reconstruct: an empty ndarray as ndarray pickles make; its BUILD
#   (ndarray.__setstate__) checks the data length against shape and dtype.
# - numpy scalar, numpy.dtype and the DType classes: a scalar from bytes, a dtype from a
#   type code.
# - _codecs.encode: str -> latin1 bytes (how protocol 2 pickles bytes), no other codec.
AUDITED_CALLABLES: Dict[str, Callable] = {
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor,
    'collections.OrderedDict': _empty_ordered_dict,
    'torch.Size': _plain_items(torch.Size),
    'builtins.set': _plain_items(set),
    'builtins.frozenset': _plain_items(frozenset),
    '_codecs.encode': _encode_latin1,
    **NUMPY_CALLABLES,
}
# Globals a pickle names as values, never calls: the ndarray type numpy's _reconstruct
# takes, and torch dtypes.
AUDITED_VALUES: Dict[str, Any] = {
    'numpy.ndarray': np.ndarray,
    **{f'torch.{name}': value for name, value in vars(torch).items()
       if isinstance(value, torch.dtype)},
}
_AUDITED_CALLABLE_IDS = {id(value) for value in AUDITED_CALLABLES.values()}


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, UnknownObject)


class RestrictedUnpickler(pickle._Unpickler):
    """A pure-Python unpickler that imports nothing and calls nothing outside
    :data:`AUDITED_CALLABLES`; other classes become :class:`UnknownObject` types.

    Raises:
        UnsafePickleError: the pickle calls anything else, or reaches a method of an
            object other than the containers this reader builds.
    """
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.placeholders: Dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle would map them
            module, name = pickle._compat_pickle.NAME_MAPPING.get(
                (module, name), (pickle._compat_pickle.IMPORT_MAPPING.get(module, module),
                                 name))
        qualified_name = f'{module}.{name}'
        for audited in (AUDITED_CALLABLES, AUDITED_VALUES):
            if qualified_name in audited:
                return audited[qualified_name]
        if qualified_name not in self.placeholders:
            self.placeholders[qualified_name] = type(
                name, (UnknownObject, ), dict(pickled_class=qualified_name,
                                              __module__=__name__))
        return self.placeholders[qualified_name]

    def _call(self, function: Any, args: tuple) -> Any:
        if _is_placeholder(function):
            raise UnsafePickleError(f'it calls {function.pickled_class}(...)')
        if id(function) not in _AUDITED_CALLABLE_IDS:
            raise UnsafePickleError(f'it calls {function!r}, which is not allow-listed')
        return function(*args)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ opcodes
        self.append(self._call(klass, tuple(args)))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not _is_placeholder(cls):
            raise UnsafePickleError(f'it creates a {cls!r} without its constructor')
        self.append(cls.__new__(cls, *args))

    def load_newobj_ex(self) -> None:
        self.stack.pop()  # keyword arguments: a placeholder keeps only the positional ones
        self.load_newobj()

    def load_build(self) -> None:
        state = self.stack.pop()
        instance = self.stack[-1]
        if isinstance(instance, UnknownObject):
            instance.pickled_state = state
        elif isinstance(instance, (np.ndarray, np.dtype)):
            instance.__setstate__(state)  # numpy checks the state against shape and dtype
        elif type(instance) is not collections.OrderedDict:
            # The state of an OrderedDict is its __dict__ (a state dict's ``_metadata``), a
            # way to shadow ``.get``: dropped, the reader returns plain dicts anyway.
            raise UnsafePickleError(f'it sets the state of a {type(instance).__name__}')

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._dict_on_top()[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._dict_on_top()
        for index in range(0, len(items), 2):
            target[items[index]] = items[index + 1]

    def _dict_on_top(self) -> dict:
        if not isinstance(self.stack[-1], dict):
            raise UnsafePickleError(f'it sets items of a {type(self.stack[-1]).__name__}')
        return self.stack[-1]

    def load_append(self) -> None:
        value = self.stack.pop()
        self._list_on_top().append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._list_on_top().extend(items)

    def _list_on_top(self) -> list:
        if type(self.stack[-1]) is not list:
            raise UnsafePickleError(f'it appends to a {type(self.stack[-1]).__name__}')
        return self.stack[-1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not set:
            raise UnsafePickleError(f'it adds items to a {type(self.stack[-1]).__name__}')
        self.stack[-1].update(items)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems


def restricted_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose unpickling is :class:`RestrictedUnpickler`."""
    module = types.ModuleType('mmrepvgg_restricted_pickle')
    module.Unpickler = RestrictedUnpickler
    module.UnpicklingError = pickle.UnpicklingError
    module.load = lambda stream, **kwargs: RestrictedUnpickler(stream, **kwargs).load()
    return module

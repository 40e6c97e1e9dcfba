"""The one checkpoint reader: bytes in, inert data out, nothing from the file ever runs.

Every load of the project ends here (:func:`read_checkpoint_bytes`). The file is opened
once and read whole; everything below works on those bytes and nothing else:

- **torch zip** (``torch.save``, torch >= 1.6): the archive is parsed with ``zipfile`` over
  the bytes read; each record used must be stored (not compressed), match its CRC-32 and
  hold exactly the bytes its storage declares. ``torch.load`` never sees the file.
- **torch legacy** (``_use_new_zipfile_serialization=False``): magic number, protocol,
  system info, the main pickle, the list of storage keys, then each storage as an 8-byte
  element count and its bytes. Every storage the pickle uses must be listed and stored
  once with the size it declared, and nothing may follow the last one.
- **safetensors**: an 8-byte header length, a JSON header, the tensors' bytes; the
  offsets must tile the data exactly.

Pickles are read by :class:`_Unpickler`, an explicit loop over the opcodes in
:data:`_OPCODES`; any other opcode is refused. A pickle may name only the globals of
:data:`_CALLS` (each checks its arguments) and :data:`_NAMES`, and it builds only inert
values: containers, numbers, strings, tensors built here from the file's bytes (dtypes of
:data:`STORAGE_DTYPES`), numpy arrays and scalars of :data:`NUMPY_DTYPES` (built here with
``np.frombuffer``), mmengine ``HistoryBuffer``s made fresh from checked arrays. Dict
subclasses (``OrderedDict``, yacs ``CfgNode``) and ``argparse.Namespace`` become dicts.
No allow-list of torch is touched, so the process is unchanged by construction.

Bounds: memo references are shared, never copied; containers nest at most
:data:`MAX_NESTING` deep, without cycles; dict keys and set items are plain scalars (a
nested tuple key would hash in exponential time); integers have at most
:data:`MAX_INT_BYTES` bytes. Time and memory are thus linear in the file's size.
"""
import io
import json
import math
import os
import re
import stat
import struct
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .errors import CheckpointError
from .remote import checkpoint_local_path, forget_download

MAX_NESTING = 100
MAX_INT_BYTES = 64
ZIP_MAGIC = b'PK\x03\x04'
LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001

# torch's storage classes as pickles name them, and the dtype of their elements.
STORAGE_DTYPES: Dict[str, torch.dtype] = {
    f'torch.{name}Storage': dtype for name, dtype in (
        ('Float', torch.float32), ('Double', torch.float64), ('Half', torch.float16),
        ('BFloat16', torch.bfloat16), ('Long', torch.int64), ('Int', torch.int32),
        ('Short', torch.int16), ('Char', torch.int8), ('Byte', torch.uint8),
        ('Bool', torch.bool))}
SAFETENSORS_DTYPES: Dict[str, torch.dtype] = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16,
    'BF16': torch.bfloat16, 'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16,
    'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool}
# numpy type codes of plain numbers (never 'O' objects, structured or void types).
NUMPY_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
_PLAIN_KEY_TYPES = (str, int, float, bool, type(None), bytes)
_LOCATION = re.compile(r'(?:cpu|cuda(?::[0-9]{1,3})?|mps)', re.ASCII)
_STORAGE_KEY = re.compile(r'[0-9]{1,24}', re.ASCII)

# Why a refused torch global is there, for the message.
_REFUSAL_HINTS = {
    'torch._utils._rebuild_sparse_tensor': 'a sparse tensor; save it dense (tensor.to_dense())',
    'torch._utils._rebuild_qtensor':
        'a quantized tensor; save the float weights (tensor.dequantize())',
    'torch._utils._rebuild_meta_tensor_no_storage':
        'a meta tensor (it holds no values); save the materialised weights',
    'torch._utils._rebuild_nested_tensor': 'a nested tensor; save its components',
    'torch._utils._rebuild_tensor_v3':
        'a tensor of a dtype no RepVGG checkpoint holds (float8, uint16, ...); save '
        'float32, float16 or bfloat16 tensors',
    'torch._tensor._rebuild_from_type_v2':
        'a tensor subclass or a tensor with attributes set on it; save plain tensors',
    'torch._utils._rebuild_wrapper_subclass':
        'a tensor subclass (DTensor, ...); save plain tensors (e.g. DTensor.full_tensor())',
    'torch.ComplexFloatStorage':
        'a complex tensor, whose imaginary part would be dropped; save real tensors',
    'torch.ComplexDoubleStorage':
        'a complex tensor, whose imaginary part would be dropped; save real tensors',
}


class _Refused(Exception):
    """What is wrong with the file, as the second half of a one-line message."""


class _Global:
    """A global the pickle named (from :data:`_CALLS` or :data:`_NAMES`): only a name."""

    def __init__(self, name: str):
        self.name = name


class _Unfinished:
    """An object whose data arrives by a later BUILD (a numpy array or dtype, a
    HistoryBuffer); it may not be used before that, and is replaced by ``result``."""

    def __init__(self, kind: str, argument: Any = None):
        self.kind, self.argument, self.result = kind, argument, None


class _Storage:
    """A storage of the file: ``flat`` holds its ``numel`` elements of ``dtype``."""

    def __init__(self, dtype: torch.dtype, numel: int, flat: torch.Tensor):
        self.dtype, self.numel, self.flat = dtype, numel, flat


def _is_int(value: Any, minimum: int = 0) -> bool:
    return type(value) is int and minimum <= value < 2**62


def view_exceeds_storage(shape: tuple, stride: tuple, storage_offset: int,
                         storage_elements: int) -> bool:
    """Whether a strided view names an element outside its storage, or two of its
    elements share one (a stride-0 dimension of size > 1): such a view lets a few stored
    bytes claim a 20000x20000 tensor that the first computation materialises."""
    if math.prod(shape) == 0:
        return False
    if any(size > 1 and step == 0 for size, step in zip(shape, stride)):
        return True
    last_element = storage_offset + sum((size - 1) * step for size, step in zip(shape, stride))
    return math.prod(shape) > storage_elements or last_element >= storage_elements


def _flat_tensor(raw: bytes, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D tensor over a writable copy of ``raw``."""
    if not raw:
        return torch.empty(0, dtype=dtype)
    return _checked_bools(torch.frombuffer(bytearray(raw), dtype=dtype))


def _checked_bools(flat: torch.Tensor) -> torch.Tensor:
    # A bool byte other than 0 or 1 is undefined behaviour in torch's kernels.
    if flat.dtype == torch.bool and flat.numel() and int(flat.view(torch.uint8).max()) > 1:
        raise _Refused('refused, a bool tensor holds bytes other than 0 and 1')
    return flat


def _strided_view(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    if not isinstance(storage, _Storage):
        raise _Refused('refused, it rebuilds a tensor from something other than a storage '
                       'of the file')
    if not (_is_int(offset) and type(size) is tuple and type(stride) is tuple
            and len(size) == len(stride) <= 16 and all(map(_is_int, size + stride))):
        raise _Refused('refused, a tensor has an invalid offset, shape or stride')
    if view_exceeds_storage(size, stride, offset, storage.numel):
        plural = '' if storage.numel == 1 else 's'
        raise _Refused(f'a tensor claims shape {size} with strides {stride} over '
                       f'{storage.numel} stored element{plural}, a damaged or malicious view; '
                       're-download or re-save the checkpoint')
    return torch.as_strided(storage.flat, size, stride, offset)


def _no_hooks(hooks: Any) -> bool:
    # torch pickles a tensor's backward hooks as OrderedDict(); autograd would call them.
    return type(hooks) is dict and not hooks


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    if type(requires_grad) is not bool or not _no_hooks(hooks) or metadata:
        raise _Refused('refused, a tensor carries hooks or metadata')
    return _strided_view(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, hooks):
    if type(data) is not torch.Tensor or type(requires_grad) is not bool \
            or not _no_hooks(hooks):
        raise _Refused('refused, a parameter is not a plain tensor without hooks')
    return torch.nn.Parameter(data, requires_grad)


def _ordered_dict(*args):
    if args:
        raise _Refused('refused, it calls collections.OrderedDict with arguments')
    return {}


def _plain_items(factory: Callable) -> Callable:
    def build(items=()):
        if type(items) not in (list, tuple) or not all(map(_is_plain_key, items)):
            raise _Refused(f'refused, it builds a {factory.__name__} of non-plain items')
        return factory(items)
    return build


def _size(dims):
    if type(dims) is not tuple or not all(map(_is_int, dims)):
        raise _Refused('refused, it calls torch.Size with non-integers')
    return torch.Size(dims)


def _latin1(text, encoding):
    if type(text) is not str or encoding != 'latin1':
        raise _Refused('refused, it calls _codecs.encode other than for latin1 bytes')
    return text.encode('latin1')


def _numpy_reconstruct(subtype, shape, type_code):
    if not (isinstance(subtype, _Global) and subtype.name == 'numpy.ndarray'
            and shape == (0, ) and type_code == b'b'):
        raise _Refused('refused, it calls numpy _reconstruct other than as arrays pickle')
    return _Unfinished('ndarray')


def _numpy_dtype(code, align, copy):
    if code not in NUMPY_DTYPES or (align, copy) != (False, True):
        raise _Refused(f'refused, it holds a numpy dtype {code!r}, not a plain number type '
                       '(object arrays hold pointers); save plain numeric arrays')
    return _Unfinished('dtype', code)


def _numpy_scalar(dtype, raw):
    if not isinstance(dtype, np.dtype) or type(raw) is not bytes \
            or len(raw) != dtype.itemsize:
        raise _Refused('refused, it calls numpy scalar with other than a number\'s bytes')
    return np.frombuffer(raw, dtype)[0]


def _statistic(owner, name):
    # mmengine pickles HistoryBuffer's statistics as getattr(HistoryBuffer, 'mean').
    if not (isinstance(owner, _Global) and owner.name == _HISTORY_BUFFER
            and name in HISTORY_BUFFER_STATISTICS):
        raise _Refused(f'refused, it calls builtins.getattr(..., {name!r}), which no '
                       'checkpoint needs')
    return name


def _finished_dtype(dtype: _Unfinished, state: Any) -> np.dtype:
    if type(state) is not tuple or len(state) != 8 or state[0] != 3 \
            or state[1] not in ('<', '|') or state[2:] != (None, None, None, -1, -1, 0):
        raise _Refused('refused, it holds a numpy dtype that is not a plain number type')
    return np.dtype(state[1] + dtype.argument)


def _finished_array(array: _Unfinished, state: Any) -> np.ndarray:
    if type(state) is not tuple or len(state) != 5 or state[0] != 1:
        raise _Refused('refused, it holds a numpy array in an unknown form')
    _, shape, dtype, fortran_order, raw = state
    if not (type(shape) is tuple and all(map(_is_int, shape)) and isinstance(dtype, np.dtype)
            and type(fortran_order) is bool and type(raw) is bytes
            and len(raw) == math.prod(shape) * dtype.itemsize):
        raise _Refused('refused, it holds a numpy array whose bytes do not match its shape '
                       'and plain number dtype')
    return np.frombuffer(raw, dtype).reshape(shape, order='F' if fortran_order else 'C').copy()


def _finished_history_buffer(buffer: _Unfinished, state: Any) -> HistoryBuffer:
    fields = state if type(state) is dict else {}
    histories = (fields.get('_log_history'), fields.get('_count_history'))
    max_length = fields.get('max_length')
    if not (set(fields) <= {'_log_history', '_count_history', 'max_length',
                            'statistics_methods'}
            and all(isinstance(history, np.ndarray) and history.ndim == 1
                    for history in histories) and _is_int(max_length, 1)
            and len(histories[0]) == len(histories[1])):
        raise _Refused('a HistoryBuffer without numeric histories and max_length; re-save it')
    # A fresh buffer: the pickled statistics_methods never reach the class-wide table.
    return HistoryBuffer(*histories, max_length)


_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'
_NUMPY_CALLS = {}
for _package in ('numpy.core', 'numpy._core'):  # NumPy 1.x and 2 names
    _NUMPY_CALLS[f'{_package}.multiarray._reconstruct'] = _numpy_reconstruct
    _NUMPY_CALLS[f'{_package}.multiarray.scalar'] = _numpy_scalar
# Every global a pickle may call (REDUCE), each checking its arguments; Python 2 names
# (``__builtin__``) are how protocol 2 spells builtins.
_CALLS: Dict[str, Callable] = {
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'collections.OrderedDict': _ordered_dict,
    'torch.Size': _size,
    '_codecs.encode': _latin1,
    'numpy.dtype': _numpy_dtype,
    **_NUMPY_CALLS,
    **{f'{module}.{name}': _plain_items(factory) for module in ('builtins', '__builtin__')
       for name, factory in (('set', set), ('frozenset', frozenset))},
    **{f'{module}.getattr': _statistic for module in ('builtins', '__builtin__')},
}
# Globals that are only named: an argument (numpy.ndarray, a storage class) or a class
# NEWOBJ makes an instance of (without calling its code), with what it becomes.
_NEW_OBJECTS = {_HISTORY_BUFFER: 'HistoryBuffer', 'yacs.config.CfgNode': 'CfgNode',
                'argparse.Namespace': 'Namespace'}
_NAMES = frozenset({'numpy.ndarray', *STORAGE_DTYPES, *_NEW_OBJECTS})
_BUILDERS = {'dtype': _finished_dtype, 'ndarray': _finished_array,
             'HistoryBuffer': _finished_history_buffer}


def _is_plain_key(value: Any) -> bool:
    if type(value) is tuple:
        return all(type(item) in _PLAIN_KEY_TYPES for item in value)
    return type(value) in _PLAIN_KEY_TYPES


class _Unpickler:
    """Reads one pickle from ``data[position:]`` by the opcodes of :data:`_OPCODES`.

    Args:
        data: the file's bytes.
        position: where the pickle starts.
        persistent_load: builds a storage from a persistent id (torch's ``BINPERSID``).
    """

    def __init__(self, data: bytes, position: int, persistent_load: Callable[[Any], Any]):
        self.data, self.position, self.persistent_load = data, position, persistent_load
        self.stack: List[Any] = []
        self.marks: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.dicts_of: Dict[int, Tuple[dict, str]] = {}  # id -> (dict, OrderedDict/...)

    def read(self, count: int) -> bytes:
        end = self.position + count
        if count < 0 or end > len(self.data):
            raise _Refused('truncated or corrupt checkpoint (a pickle ends early); '
                           're-download or re-save it')
        chunk, self.position = self.data[self.position:end], end
        return chunk

    def unpack(self, form: str) -> Any:
        return struct.unpack(form, self.read(struct.calcsize(form)))[0]

    def pop(self) -> Any:
        if not self.stack:
            raise _Refused('refused, its pickle is malformed (empty stack)')
        return _usable(self.stack.pop())

    def pop_mark(self) -> List[Any]:
        if not self.marks:
            raise _Refused('refused, its pickle is malformed (no mark)')
        items, self.stack = self.stack, self.marks.pop()
        return [_usable(item) for item in items]

    def top(self) -> Any:
        if not self.stack:
            raise _Refused('refused, its pickle is malformed (empty stack)')
        return self.stack[-1]

    def load(self) -> Tuple[Any, int]:
        """The pickle's value and the position after its STOP."""
        while True:
            opcode = self.read(1)
            handler = _OPCODES.get(opcode)
            if handler is None:
                raise _Refused(f'refused, its pickle uses opcode {opcode!r}, which no '
                               'checkpoint needs')
            if handler is _stop:
                value = self.pop()
                if self.stack or self.marks:
                    raise _Refused('refused, its pickle is malformed (left on the stack)')
                return value, self.position
            handler(self)

    def global_named(self, name: str) -> _Global:
        if name not in _CALLS and name not in _NAMES:
            hint = _REFUSAL_HINTS.get(name)
            reason = f'which makes {hint}' if hint else (
                'which no checkpoint needs; it may be malicious, do not load it elsewhere '
                'with weights_only=False')
            raise _Refused(f'refused, it calls {name}, {reason}')
        return _Global(name)

    def reduce(self) -> None:
        args, function = self.pop(), self.pop()
        if not (isinstance(function, _Global) and function.name in _CALLS
                and type(args) is tuple):
            name = function.name if isinstance(function, _Global) else type(function).__name__
            raise _Refused(f'refused, it calls {name}, which is only a name here')
        try:
            value = _CALLS[function.name](*args)
        except TypeError as error:  # wrong argument count
            raise _Refused(f'refused, it calls {function.name} with unexpected arguments'
                           ) from error
        if function.name == 'collections.OrderedDict':
            self.dicts_of[id(value)] = (value, 'OrderedDict')
        self.stack.append(value)

    def newobj(self) -> None:
        args, cls = self.pop(), self.pop()
        kind = _NEW_OBJECTS.get(cls.name) if isinstance(cls, _Global) else None
        if kind is None or args != ():
            raise _Refused('refused, it creates an object of a class no checkpoint needs')
        if kind == 'HistoryBuffer':
            self.stack.append(_Unfinished(kind))
            return
        value: dict = {}
        self.dicts_of[id(value)] = (value, kind)
        self.stack.append(value)

    def build(self) -> None:
        state, target = self.pop(), self.top()
        if isinstance(target, _Unfinished) and target.result is None:
            target.result = _BUILDERS[target.kind](target, state)
            self.stack[-1] = target.result
            return
        kind = self.dicts_of.get(id(target), (None, None))[1]
        if kind is None:
            raise _Refused(f'refused, it sets the state of a {type(target).__name__}')
        # The __dict__ of an OrderedDict or CfgNode is flags (or a way to shadow ``.get``):
        # dropped. A Namespace's is its data.
        if kind == 'Namespace':
            if type(state) is not dict or not all(type(key) is str for key in state):
                raise _Refused('refused, an argparse.Namespace has a state that is not '
                               'named values')
            target.update(state)

    def set_items(self, target: Any, items: List[Any]) -> None:
        if type(target) is not dict or len(items) % 2:
            raise _Refused(f'refused, it sets items of a {type(target).__name__}')
        for index in range(0, len(items), 2):
            if not _is_plain_key(items[index]):
                raise _Refused('refused, a dict key is not a string or number')
            target[items[index]] = items[index + 1]

    def memo_get(self, index: int) -> None:
        if index not in self.memo:
            raise _Refused('refused, its pickle is malformed (unknown memo entry)')
        value = self.memo[index]
        self.stack.append(value.result if isinstance(value, _Unfinished)
                          and value.result is not None else value)


def _usable(value: Any) -> Any:
    if isinstance(value, _Unfinished):
        if value.result is None:
            raise _Refused('refused, it uses an object before its data is set')
        return value.result
    return value


def _stop(unpickler: _Unpickler) -> None:
    """STOP is handled by the loop itself."""


def _append(u: _Unpickler, items: List[Any]) -> None:
    if type(u.top()) is not list:
        raise _Refused(f'refused, it appends to a {type(u.top()).__name__}')
    u.top().extend(items)


def _add_items(u: _Unpickler, items: List[Any]) -> None:
    if type(u.top()) is not set or not all(map(_is_plain_key, items)):
        raise _Refused('refused, it adds items other than strings or numbers to a set')
    u.top().update(items)


def _push(make: Callable[[_Unpickler], Any]) -> Callable[[_Unpickler], None]:
    def push(u: _Unpickler) -> None:
        value = make(u)  # first: make may replace u.stack (the opcodes ending a mark)
        u.stack.append(value)
    return push


def _long(u: _Unpickler, length_form: str) -> int:
    length = u.unpack(length_form)
    if length > MAX_INT_BYTES:
        raise _Refused(f'refused, it holds an integer of {length} bytes')
    return int.from_bytes(u.read(length), 'little', signed=True)


def _text(u: _Unpickler, length_form: str) -> str:
    return u.read(u.unpack(length_form)).decode('utf-8', 'surrogatepass')


def _put(u: _Unpickler, index: int) -> None:
    u.memo[index] = u.top()


def _line(u: _Unpickler) -> str:
    end = u.data.find(b'\n', u.position, u.position + 256)
    if end < 0:
        raise _Refused('refused, its pickle names a global without an end of line')
    return u.read(end + 1 - u.position)[:-1].decode('ascii', 'replace')


def _global(u: _Unpickler) -> None:
    module = _line(u)
    u.stack.append(u.global_named(f'{module}.{_line(u)}'))


def _stack_global(u: _Unpickler) -> None:
    name, module = u.pop(), u.pop()
    if type(module) is not str or type(name) is not str:
        raise _Refused('refused, its pickle is malformed (STACK_GLOBAL)')
    u.stack.append(u.global_named(f'{module}.{name}'))


def _persistent_id(u: _Unpickler) -> None:
    u.stack.append(u.persistent_load(u.pop()))


def _tuple_of(count: int) -> Callable[[_Unpickler], None]:
    def build(u: _Unpickler) -> None:
        items = [u.pop() for _ in range(count)][::-1]
        u.stack.append(tuple(items))
    return build


def _dict_from_mark(u: _Unpickler) -> None:
    items = u.pop_mark()
    value: dict = {}
    u.set_items(value, items)
    u.stack.append(value)


def _discard_frame(u: _Unpickler) -> None:
    u.read(8)  # protocol 4 framing: a length the loop does not need


def _protocol(u: _Unpickler) -> None:
    if u.read(1)[0] not in (2, 3, 4, 5):
        raise _Refused('refused, its pickle protocol is not 2 to 5')


# The opcodes the reader knows (pickletools names); any other byte is refused.
_OPCODES: Dict[bytes, Callable[[_Unpickler], None]] = {
    b'\x80': _protocol,                                              # PROTO
    b'\x95': _discard_frame,                                         # FRAME
    b'.': _stop,                                                     # STOP
    b'(': lambda u: (u.marks.append(u.stack), setattr(u, 'stack', [])),  # MARK
    b'0': lambda u: u.pop(),                                         # POP
    b'1': lambda u: u.pop_mark(),                                    # POP_MARK
    b'2': _push(lambda u: u.top()),                                  # DUP
    b'N': _push(lambda u: None),                                     # NONE
    b'\x88': _push(lambda u: True),                                  # NEWTRUE
    b'\x89': _push(lambda u: False),                                 # NEWFALSE
    b'J': _push(lambda u: u.unpack('<i')),                           # BININT
    b'K': _push(lambda u: u.unpack('<B')),                           # BININT1
    b'M': _push(lambda u: u.unpack('<H')),                           # BININT2
    b'\x8a': _push(lambda u: _long(u, '<B')),                        # LONG1
    b'\x8b': _push(lambda u: _long(u, '<I')),                        # LONG4
    b'G': _push(lambda u: u.unpack('>d')),                           # BINFLOAT
    b'\x8c': _push(lambda u: _text(u, '<B')),                        # SHORT_BINUNICODE
    b'X': _push(lambda u: _text(u, '<I')),                           # BINUNICODE
    b'\x8d': _push(lambda u: _text(u, '<Q')),                        # BINUNICODE8
    b'C': _push(lambda u: u.read(u.unpack('<B'))),                   # SHORT_BINBYTES
    b'B': _push(lambda u: u.read(u.unpack('<I'))),                   # BINBYTES
    b'\x8e': _push(lambda u: u.read(u.unpack('<Q'))),                # BINBYTES8
    b'}': _push(lambda u: {}),                                       # EMPTY_DICT
    b']': _push(lambda u: []),                                       # EMPTY_LIST
    b')': _push(lambda u: ()),                                       # EMPTY_TUPLE
    b'\x8f': _push(lambda u: set()),                                 # EMPTY_SET
    b'd': _dict_from_mark,                                           # DICT
    b'l': _push(lambda u: u.pop_mark()),                             # LIST
    b't': _push(lambda u: tuple(u.pop_mark())),                      # TUPLE
    b'\x85': _tuple_of(1),                                           # TUPLE1
    b'\x86': _tuple_of(2),                                           # TUPLE2
    b'\x87': _tuple_of(3),                                           # TUPLE3
    b'\x91': _push(lambda u: _plain_items(frozenset)(u.pop_mark())),  # FROZENSET
    b'a': lambda u: _append(u, [u.pop()]),                           # APPEND
    b'e': lambda u: _append(u, u.pop_mark()),                        # APPENDS
    b's': lambda u: (lambda value, key: u.set_items(u.top(), [key, value]))(
        u.pop(), u.pop()),                                           # SETITEM
    b'u': lambda u: (lambda items: u.set_items(u.top(), items))(u.pop_mark()),  # SETITEMS
    b'\x90': lambda u: (lambda items: _add_items(u, items))(u.pop_mark()),  # ADDITEMS
    b'q': lambda u: _put(u, u.unpack('<B')),                         # BINPUT
    b'r': lambda u: _put(u, u.unpack('<I')),                         # LONG_BINPUT
    b'\x94': lambda u: _put(u, len(u.memo)),                         # MEMOIZE
    b'h': lambda u: u.memo_get(u.unpack('<B')),                      # BINGET
    b'j': lambda u: u.memo_get(u.unpack('<I')),                      # LONG_BINGET
    b'c': _global,                                                   # GLOBAL
    b'\x93': _stack_global,                                          # STACK_GLOBAL
    b'R': lambda u: u.reduce(),                                      # REDUCE
    b'\x81': lambda u: u.newobj(),                                   # NEWOBJ
    b'b': lambda u: u.build(),                                       # BUILD
    b'Q': _persistent_id,                                            # BINPERSID
}


def _children(value: Any) -> Any:
    if type(value) is dict:
        return value.values()
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return ()


def _check_nesting(root: Any) -> None:
    """Refuse containers nested deeper than :data:`MAX_NESTING` or in a cycle, visiting
    each container once (shared ones too), so the walk is linear in the file."""
    height: Dict[int, int] = {}
    path: List[Tuple[Any, Any]] = [(root, iter(_children(root)))]
    on_path = {id(root)}
    tallest = [0]
    while path:
        value, children = path[-1]
        for child in children:
            if not _children(child):
                continue
            if id(child) in on_path:
                raise _Refused('refused, a container contains itself')
            if id(child) in height:
                tallest[-1] = max(tallest[-1], height[id(child)])
                if len(path) + height[id(child)] > MAX_NESTING:
                    raise _Refused(f'refused, containers nest more than {MAX_NESTING} deep')
                continue
            if len(path) >= MAX_NESTING:
                raise _Refused(f'refused, containers nest more than {MAX_NESTING} deep')
            path.append((child, iter(_children(child))))
            on_path.add(id(child))
            tallest.append(0)
            break
        else:
            path.pop()
            on_path.discard(id(value))
            height[id(value)] = tallest.pop() + 1
            if tallest:
                tallest[-1] = max(tallest[-1], height[id(value)])


def _storage_pid(pid: Any, legacy: bool) -> Tuple[torch.dtype, str, int]:
    """``(dtype, key, numel)`` of a persistent id ``('storage', class, key, location,
    numel)`` (legacy files add a view, which must be None)."""
    length = 6 if legacy else 5
    if type(pid) is not tuple or len(pid) != length or pid[0] != 'storage':
        raise _Refused('refused, it references data other than a tensor storage')
    storage_class, key, location, numel = pid[1:5]
    name = storage_class.name if isinstance(storage_class, _Global) else None
    if name not in STORAGE_DTYPES:
        raise _Refused(f'refused, a storage is of class {name}, not a plain number storage')
    if location == 'meta':
        raise _Refused('refused, a storage is on the meta device, which makes '
                       f'{_REFUSAL_HINTS["torch._utils._rebuild_meta_tensor_no_storage"]}')
    if not (type(key) is str and _STORAGE_KEY.fullmatch(key) and type(location) is str
            and _LOCATION.fullmatch(location) and _is_int(numel)
            and (not legacy or pid[5] is None)):
        raise _Refused('refused, a storage reference is malformed')
    return STORAGE_DTYPES[name], key, numel


def _zip_record(archive: zipfile.ZipFile, name: str) -> Optional[bytes]:
    """The bytes of record ``name``, stored and CRC-checked; None if absent."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise _Refused(f'record {name} is compressed, which torch.save never does; re-save '
                       'the checkpoint with torch.save')
    if info.flag_bits & 0x1:
        raise _Refused(f'record {name} is encrypted; re-save the checkpoint with torch.save')
    try:
        return archive.read(info)  # zipfile checks the CRC-32 as it reads
    except zipfile.BadZipFile as error:
        if 'CRC' in str(error):
            raise _Refused(f'record {name} is damaged (its CRC-32 does not match); '
                           're-download or re-save the checkpoint') from error
        raise


def _read_zip(data: bytes) -> Any:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise _Refused(f'truncated or corrupt checkpoint ({error}); re-download or re-save '
                       'it') from error
    pickles = [name for name in names if name.count('/') == 1 and name.endswith('/data.pkl')]
    if len(pickles) != 1 or len(set(names)) != len(names):
        raise _Refused('refused, the archive has no single data.pkl or repeats a record name '
                       '(torch.save writes neither); re-save the checkpoint')
    prefix = pickles[0][:-len('data.pkl')]
    if any(not name.startswith(prefix) for name in names):
        raise _Refused('refused, the archive holds records outside its folder')
    if f'{prefix}constants.pkl' in names or any(n.startswith(f'{prefix}code/') for n in names):
        raise _Refused('is a TorchScript archive (torch.jit.save); save model.state_dict() '
                       'with torch.save')
    try:
        if _zip_record(archive, f'{prefix}byteorder') not in (None, b'little'):
            raise _Refused('stores big-endian tensors; re-save it on a little-endian machine')
        storages: Dict[str, _Storage] = {}

        def load_storage(pid: Any) -> _Storage:
            dtype, key, numel = _storage_pid(pid, legacy=False)
            if key not in storages:
                raw = _zip_record(archive, f'{prefix}data/{key}')
                element_size = torch.empty(0, dtype=dtype).element_size()
                if raw is None or len(raw) != numel * element_size:
                    raise _Refused(f'storage {key} declares {numel} elements but the file '
                                   f'holds {0 if raw is None else len(raw)} bytes for it; '
                                   're-download or re-save the checkpoint')
                storages[key] = _Storage(dtype, numel, _flat_tensor(raw, dtype))
            if (storages[key].dtype, storages[key].numel) != (dtype, numel):
                raise _Refused(f'refused, storage {key} is declared twice, differently')
            return storages[key]

        main = _zip_record(archive, f'{prefix}data.pkl')
        return _Unpickler(main, 0, load_storage).load()[0]
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise _Refused(f'truncated or corrupt checkpoint ({error}); re-download or re-save '
                       'it') from error


def _read_legacy(data: bytes) -> Any:
    def no_storages(pid: Any) -> None:
        raise _Refused('refused, its header references storages')

    magic, position = _Unpickler(data, 0, no_storages).load()
    if magic != LEGACY_MAGIC_NUMBER:
        raise _Refused('not a PyTorch checkpoint (a pickle without torch\'s magic number); '
                       'pass the .pth file written by torch.save')
    protocol, position = _Unpickler(data, position, no_storages).load()
    system, position = _Unpickler(data, position, no_storages).load()
    if protocol != LEGACY_PROTOCOL_VERSION or type(system) is not dict \
            or system.get('little_endian') is not True:
        raise _Refused('is a legacy checkpoint of another protocol or byte order; re-save it '
                       'with a current torch')
    declared: Dict[str, _Storage] = {}

    def load_storage(pid: Any) -> _Storage:
        dtype, key, numel = _storage_pid(pid, legacy=True)
        if key not in declared:
            # Bounded by the file: the storages' bytes must all be in it.
            declared_bytes = sum(s.flat.nbytes for s in declared.values())
            element_size = torch.empty(0, dtype=dtype).element_size()
            if declared_bytes + numel * element_size > len(data):
                raise _Refused(f'storage {key} declares more bytes than the file holds; '
                               're-download or re-save the checkpoint')
            declared[key] = _Storage(dtype, numel, torch.empty(numel, dtype=dtype))
        if (declared[key].dtype, declared[key].numel) != (dtype, numel):
            raise _Refused(f'refused, storage {key} is declared twice, differently')
        return declared[key]

    value, position = _Unpickler(data, position, load_storage).load()
    keys, position = _Unpickler(data, position, no_storages).load()
    if type(keys) is not list or sorted(keys) != sorted(declared) \
            or len(set(keys)) != len(keys):
        raise _Refused('its storage list does not name each storage the pickle uses exactly '
                       'once; re-download or re-save the checkpoint')
    for key in keys:
        storage = declared[key]
        if position + 8 > len(data) or int.from_bytes(
                data[position:position + 8], 'little', signed=True) != storage.numel:
            raise _Refused(f'storage {key} is stored with another size than it declares; '
                           're-download or re-save the checkpoint')
        position += 8
        end = position + storage.flat.nbytes
        if end > len(data):
            raise _Refused('truncated or corrupt checkpoint (a storage ends early); '
                           're-download or re-save it')
        if storage.numel:
            storage.flat.view(torch.uint8).copy_(_flat_tensor(data[position:end], torch.uint8))
            _checked_bools(storage.flat)
        position = end
    if position != len(data):
        raise _Refused('holds bytes after its last storage; re-download or re-save it')
    return value


def _unique_json_keys(pairs: List[Tuple[str, Any]]) -> dict:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _Refused('not a readable safetensors file (a name repeats in its header)')
    return dict(pairs)


def _read_safetensors(data: bytes) -> Dict[str, torch.Tensor]:
    def unreadable(why: str) -> _Refused:
        return _Refused(f'not a readable safetensors file ({why}); re-download or re-save it')

    header_length = int.from_bytes(data[:8], 'little')
    if len(data) < 8 or header_length > len(data) - 8:
        raise unreadable('its header is longer than the file')
    try:
        header = json.loads(data[8:8 + header_length].decode('utf-8'),
                            object_pairs_hook=_unique_json_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise unreadable('its header is not JSON') from error
    if type(header) is not dict:
        raise unreadable('its header is not a JSON object')
    header.pop('__metadata__', None)
    tensors, end_of_previous = {}, 0
    body = data[8 + header_length:]
    try:
        entries = sorted(header.items(), key=lambda item: tuple(item[1]['data_offsets']))
        for name, entry in entries:
            dtype = SAFETENSORS_DTYPES.get(entry['dtype'])
            shape, (begin, end) = entry['shape'], entry['data_offsets']
            if dtype is None:
                raise unreadable(f'tensor {name!r} has dtype {entry["dtype"]}; save float32, '
                                 'float16 or bfloat16 tensors')
            if not (type(shape) is list and all(map(_is_int, shape)) and begin
                    == end_of_previous and _is_int(end) and end <= len(body)
                    and end - begin == math.prod(shape)
                    * torch.empty(0, dtype=dtype).element_size()):
                raise unreadable(f'the offsets of tensor {name!r} do not tile the data')
            tensors[name] = _flat_tensor(body[begin:end], dtype).reshape(shape)
            end_of_previous = end
    except (KeyError, TypeError, ValueError) as error:
        raise unreadable('a tensor entry lacks dtype, shape or data_offsets') from error
    if end_of_previous != len(body):
        raise unreadable('its data is longer or shorter than its tensors')
    return tensors


def read_checkpoint_bytes(data: bytes, is_safetensors: bool = False) -> Any:
    """The content of a checkpoint file given as its bytes.

    Args:
        data: the whole file.
        is_safetensors: the file is named ``*.safetensors`` (else told by its bytes).

    Raises:
        _Refused: what is wrong, the second half of a message naming the file.
    """
    if not data:
        raise _Refused('is empty (0 bytes); re-download or re-save it')
    if is_safetensors or data[8:9] == b'{':
        return _read_safetensors(data)
    if data.startswith(ZIP_MAGIC):
        content = _read_zip(data)
    elif data[:1] == b'\x80':
        content = _read_legacy(data)
    else:
        raise _Refused(f'not a PyTorch checkpoint (it starts with {data[:8]!r}); pass the '
                       '.pth file written by torch.save')
    _check_nesting(content)
    return content


def read_checkpoint(path: str) -> Any:
    """Read the checkpoint file at ``path`` (opened once; see the module docstring).

    Returns:
        Inert data: dicts, lists, tuples, sets, strings, bytes, numbers, CPU tensors and
        parameters, ``torch.Size``, numpy arrays and scalars, mmengine HistoryBuffers; a
        safetensors file gives ``{name: tensor}``.

    Raises:
        CheckpointError: one line naming the file, what is wrong and what to do.
    """
    try:
        # O_NONBLOCK: a FIFO put in the file's place does not hold the open forever.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), 'rb') as stream:
            status = os.fstat(stream.fileno())
            if stat.S_ISDIR(status.st_mode):
                raise _Refused('is a folder, not a checkpoint file; pass the .pth file '
                               'inside it')
            if not stat.S_ISREG(status.st_mode):
                raise _Refused('is not a regular file; pass a checkpoint file')
            data = stream.read(status.st_size + 1)
        if len(data) != status.st_size:
            raise _Refused('changed size while being read; run again once it is written')
        return read_checkpoint_bytes(data, path.endswith('.safetensors'))
    except FileNotFoundError as error:
        raise CheckpointError(f'{path}: no such checkpoint file; check the path') from error
    except IsADirectoryError as error:
        raise CheckpointError(f'{path}: is a folder, not a checkpoint file; pass the .pth '
                              'file inside it') from error
    except OSError as error:
        raise CheckpointError(f'{path}: cannot be read ({error.strerror}); check its '
                              'permissions') from error
    except _Refused as error:
        raise CheckpointError(f'{path}: {error}') from None
    except MemoryError:
        raise CheckpointError(f'{path}: does not fit in memory; free memory or use a '
                              'smaller checkpoint') from None
    except (ValueError, OverflowError, RuntimeError) as error:  # torch or numpy refusing
        raise CheckpointError(f'{path}: truncated or corrupt checkpoint '
                              f'({type(error).__name__}); re-download or re-save it') from None


def load_checkpoint_file(source: str) -> Any:
    """Read the checkpoint at a path or ``http(s)://`` URL with :func:`read_checkpoint`; a
    URL is downloaded once into the project's cache (:mod:`.remote`), and removed from it
    if the reader refuses it.

    Raises:
        CheckpointError: one line naming the file, what is wrong and what to do.
    """
    path = checkpoint_local_path(source)
    try:
        return read_checkpoint(path)
    except CheckpointError:
        forget_download(source, path)
        raise

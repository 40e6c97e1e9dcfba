"""The pickle machine: a pickle's bytes in, inert data out; nothing it names ever runs.

As in torch's ``_weights_only_unpickler``, safety comes from construction: an explicit loop
over the opcodes of :data:`OPCODES`, each with its handler method, and a refusal for every
other byte. A pickle may name only the globals of :data:`CALLS` (methods here that check
their arguments and build the value) and :data:`NAMES`, so it builds only containers,
numbers, strings, tensors over the storages its container hands in, numpy arrays and
scalars of plain number dtypes, fresh mmengine ``HistoryBuffer``\\ s; dict subclasses
(``OrderedDict``, yacs ``CfgNode``) and ``argparse.Namespace`` become dicts. Memo
references are shared, never copied; dict keys and set items are plain scalars or flat
tuples of them (a nested tuple key hashes in exponential time); integers have at most
:data:`MAX_INT_BYTES` bytes.
"""
import math
import struct
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

MAX_INT_BYTES = 64

# The opcodes the machine knows (pickletools names, protocols 2 to 5): the handler method
# of each and what it is given (a struct format, a count, a value). Any other is refused.
OPCODES: Dict[bytes, Tuple[Any, ...]] = {
    b'\x80': ('PROTO', 'op_proto'), b'\x95': ('FRAME', 'op_frame'), b'.': ('STOP', 'op_stop'),
    b'(': ('MARK', 'op_mark'), b'0': ('POP', 'pop'), b'1': ('POP_MARK', 'pop_mark'),
    b'2': ('DUP', 'op_dup'), b'N': ('NONE', 'push', None), b'\x88': ('NEWTRUE', 'push', True),
    b'\x89': ('NEWFALSE', 'push', False), b'J': ('BININT', 'push_number', '<i'),
    b'K': ('BININT1', 'push_number', '<B'), b'M': ('BININT2', 'push_number', '<H'),
    b'G': ('BINFLOAT', 'push_number', '>d'), b'\x8a': ('LONG1', 'push_long', '<B'),
    b'\x8b': ('LONG4', 'push_long', '<I'), b'\x8c': ('SHORT_BINUNICODE', 'push_text', '<B'),
    b'X': ('BINUNICODE', 'push_text', '<I'), b'\x8d': ('BINUNICODE8', 'push_text', '<Q'),
    b'C': ('SHORT_BINBYTES', 'push_bytes', '<B'), b'B': ('BINBYTES', 'push_bytes', '<I'),
    b'\x8e': ('BINBYTES8', 'push_bytes', '<Q'), b'}': ('EMPTY_DICT', 'push_empty', dict),
    b']': ('EMPTY_LIST', 'push_empty', list), b')': ('EMPTY_TUPLE', 'push_empty', tuple),
    b'\x8f': ('EMPTY_SET', 'push_empty', set), b'd': ('DICT', 'op_dict'),
    b'l': ('LIST', 'op_list'), b't': ('TUPLE', 'op_tuple'), b'\x85': ('TUPLE1', 'op_tuple_of', 1),
    b'\x86': ('TUPLE2', 'op_tuple_of', 2), b'\x87': ('TUPLE3', 'op_tuple_of', 3),
    b'\x91': ('FROZENSET', 'op_frozenset'), b'a': ('APPEND', 'op_append'),
    b'e': ('APPENDS', 'op_appends'), b's': ('SETITEM', 'op_setitem'),
    b'u': ('SETITEMS', 'op_setitems'), b'\x90': ('ADDITEMS', 'op_additems'),
    b'q': ('BINPUT', 'op_put', '<B'), b'r': ('LONG_BINPUT', 'op_put', '<I'),
    b'\x94': ('MEMOIZE', 'op_memoize'), b'h': ('BINGET', 'op_get', '<B'),
    b'j': ('LONG_BINGET', 'op_get', '<I'), b'c': ('GLOBAL', 'op_global'),
    b'\x93': ('STACK_GLOBAL', 'op_stack_global'), b'R': ('REDUCE', 'op_reduce'),
    b'\x81': ('NEWOBJ', 'op_newobj'), b'b': ('BUILD', 'op_build'),
    b'Q': ('BINPERSID', 'op_binpersid')}

_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'
# Every global a pickle may call (REDUCE), with the method that checks its arguments and
# builds the value. ``__builtin__`` is how protocol 2 spells builtins; ``numpy.core`` and
# ``numpy._core`` are NumPy 1.x's and 2's names.
CALLS: Dict[str, str] = {
    'torch._utils._rebuild_tensor_v2': 'call_rebuild_tensor',
    'torch._utils._rebuild_parameter': 'call_rebuild_parameter',
    'collections.OrderedDict': 'call_ordered_dict',
    'torch.Size': 'call_size',
    '_codecs.encode': 'call_latin1_encode',
    'numpy.dtype': 'call_numpy_dtype',
    **{f'{package}.multiarray.{name}': f'call_numpy_{name.strip("_")}'
       for package in ('numpy.core', 'numpy._core') for name in ('_reconstruct', 'scalar')},
    **{f'{module}.{name}': f'call_{name}' for module in ('builtins', '__builtin__')
       for name in ('set', 'frozenset', 'getattr')},
}
# Classes NEWOBJ may make an instance of (without running their code), and what each
# becomes: a HistoryBuffer built from its BUILD state, or a dict.
NEW_OBJECTS: Dict[str, str] = {_HISTORY_BUFFER: 'HistoryBuffer',
                               'yacs.config.CfgNode': 'CfgNode',
                               'argparse.Namespace': 'Namespace'}
# torch's storage classes as pickles name them, and the dtype of their elements.
STORAGE_DTYPES: Dict[str, torch.dtype] = {
    f'torch.{name}Storage': dtype for name, dtype in (
        ('Float', torch.float32), ('Double', torch.float64), ('Half', torch.float16),
        ('BFloat16', torch.bfloat16), ('Long', torch.int64), ('Int', torch.int32),
        ('Short', torch.int16), ('Char', torch.int8), ('Byte', torch.uint8),
        ('Bool', torch.bool))}
# Globals that may only be named: an argument (numpy.ndarray, a storage class) or a class
# of NEW_OBJECTS.
NAMES = frozenset({'numpy.ndarray', *STORAGE_DTYPES, *NEW_OBJECTS})
# numpy type codes of plain numbers (never 'O' objects, structured or void types).
NUMPY_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
_PLAIN_KEY_TYPES = (str, int, float, bool, type(None), bytes)

# Why a refused torch global is there, for the message.
REFUSAL_HINTS = {
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


class Refused(Exception):
    """What is wrong with the file, as the second half of a one-line message."""


class Global:
    """A global the pickle named (from :data:`CALLS` or :data:`NAMES`): only a name."""

    def __init__(self, name: str):
        self.name = name


class _Unfinished:
    """An object whose data arrives by a later BUILD (a numpy array or dtype, a
    HistoryBuffer): it may not be used before, and is then replaced by ``result``."""

    def __init__(self, finish: Callable[['_Unfinished', Any], Any], argument: Any = None):
        self.finish, self.argument, self.result = finish, argument, None


def is_int(value: Any, minimum: int = 0) -> bool:
    return type(value) is int and minimum <= value < 2**62


def _is_plain_key(value: Any) -> bool:
    if type(value) is tuple:
        return all(type(item) in _PLAIN_KEY_TYPES for item in value)
    return type(value) in _PLAIN_KEY_TYPES


def _plain_collection(factory: type, items: Any) -> Any:
    if type(items) not in (list, tuple) or not all(map(_is_plain_key, items)):
        raise Refused(f'refused, it builds a {factory.__name__} of non-plain items')
    return factory(items)


def _no_hooks(hooks: Any) -> bool:
    # torch pickles a tensor's backward hooks as OrderedDict(); autograd would call them.
    return type(hooks) is dict and not hooks


def _usable(value: Any) -> Any:
    if isinstance(value, _Unfinished):
        if value.result is None:
            raise Refused('refused, it uses an object before its data is set')
        return value.result
    return value


def read_pickle(data: bytes, position: int,
                persistent_load: Callable[[Any], Any]) -> Tuple[Any, int]:
    """Read one pickle from ``data[position:]``.

    Args:
        data: bytes holding the pickle (a zip record or the whole legacy file).
        position: where the pickle starts.
        persistent_load: a storage from a persistent id (torch's ``BINPERSID``); a tensor
            is rebuilt only over what it returns, by the storage's ``view(offset, shape,
            stride)``.

    Returns:
        The pickle's value and the position after its STOP.

    Raises:
        Refused: what is wrong, the second half of a message naming the file.
    """
    return _PickleMachine(data, position, persistent_load).run()


class _PickleMachine:
    """The stack, marks and memo of one pickle, and the handlers of :data:`OPCODES`."""

    def __init__(self, data: bytes, position: int, persistent_load: Callable[[Any], Any]):
        self.data, self.position, self.persistent_load = data, position, persistent_load
        self.stack: List[Any] = []
        self.marks: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.storages: Dict[int, Any] = {}  # id -> what persistent_load returned
        # id -> (dict, what it was pickled as): the dict is held so that its id stays its own.
        self.dicts_of: Dict[int, Tuple[dict, str]] = {}
        self.finished = False

    def run(self) -> Tuple[Any, int]:
        while not self.finished:
            opcode = self.read(1)
            if opcode not in OPCODES:
                raise Refused(f'refused, its pickle uses opcode {opcode!r}, which no '
                              'checkpoint needs')
            _, handler, *arguments = OPCODES[opcode]
            getattr(self, handler)(*arguments)
        return self.stack.pop(), self.position

    # --- the bytes and the stack ---
    def read(self, count: int) -> bytes:
        end = self.position + count
        if count < 0 or end > len(self.data):
            raise Refused('truncated or corrupt checkpoint (a pickle ends early); '
                          're-download or re-save it')
        chunk, self.position = self.data[self.position:end], end
        return chunk

    def unpack(self, form: str) -> Any:
        return struct.unpack(form, self.read(struct.calcsize(form)))[0]

    def read_line(self) -> str:
        end = self.data.find(b'\n', self.position, self.position + 256)
        if end < 0:
            raise Refused('refused, its pickle names a global without an end of line')
        return self.read(end + 1 - self.position)[:-1].decode('ascii', 'replace')

    def pop(self) -> Any:
        if not self.stack:
            raise Refused('refused, its pickle is malformed (empty stack)')
        return _usable(self.stack.pop())

    def pop_mark(self) -> List[Any]:
        if not self.marks:
            raise Refused('refused, its pickle is malformed (no mark)')
        items = self.stack
        self.stack = self.marks.pop()
        return [_usable(item) for item in items]

    def top(self) -> Any:
        if not self.stack:
            raise Refused('refused, its pickle is malformed (empty stack)')
        return self.stack[-1]

    def set_items(self, target: Any, items: List[Any]) -> None:
        if type(target) is not dict or len(items) % 2:
            raise Refused(f'refused, it sets items of a {type(target).__name__}')
        for index in range(0, len(items), 2):
            if not _is_plain_key(items[index]):
                raise Refused('refused, a dict key is not a string or number')
            target[items[index]] = items[index + 1]

    def extend_list(self, items: List[Any]) -> None:
        target = self.top()
        if type(target) is not list:
            raise Refused(f'refused, it appends to a {type(target).__name__}')
        target.extend(items)

    def push_global(self, name: str) -> None:
        if name not in CALLS and name not in NAMES:
            hint = REFUSAL_HINTS.get(name)
            reason = f'which makes {hint}' if hint else (
                'which no checkpoint needs; it may be malicious, do not load it elsewhere '
                'with weights_only=False')
            raise Refused(f'refused, it calls {name}, {reason}')
        self.stack.append(Global(name))

    # --- the handlers of OPCODES (pop and pop_mark above are POP's and POP_MARK's) ---
    def op_proto(self) -> None:
        if self.read(1)[0] not in (2, 3, 4, 5):
            raise Refused('refused, its pickle protocol is not 2 to 5')

    def op_frame(self) -> None:
        self.read(8)  # protocol 4 framing: a length the loop does not need

    def op_stop(self) -> None:
        value = self.pop()
        if self.stack or self.marks:
            raise Refused('refused, its pickle is malformed (left on the stack)')
        self.stack.append(value)
        self.finished = True

    def op_mark(self) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def op_dup(self) -> None:
        self.stack.append(self.top())

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def push_number(self, form: str) -> None:
        self.stack.append(self.unpack(form))

    def push_long(self, length_form: str) -> None:
        length = self.unpack(length_form)
        if length > MAX_INT_BYTES:
            raise Refused(f'refused, it holds an integer of {length} bytes')
        self.stack.append(int.from_bytes(self.read(length), 'little', signed=True))

    def push_text(self, length_form: str) -> None:
        raw = self.read(self.unpack(length_form))
        self.stack.append(raw.decode('utf-8', 'surrogatepass'))

    def push_bytes(self, length_form: str) -> None:
        self.stack.append(self.read(self.unpack(length_form)))

    def push_empty(self, container_type: type) -> None:
        self.stack.append(container_type())

    def op_dict(self) -> None:
        items = self.pop_mark()
        value: dict = {}
        self.set_items(value, items)
        self.stack.append(value)

    def op_list(self) -> None:
        items = self.pop_mark()
        self.stack.append(items)

    def op_tuple(self) -> None:
        items = self.pop_mark()
        self.stack.append(tuple(items))

    def op_tuple_of(self, count: int) -> None:
        items = [self.pop() for _ in range(count)]
        items.reverse()
        self.stack.append(tuple(items))

    def op_frozenset(self) -> None:
        items = self.pop_mark()
        self.stack.append(self.call_frozenset(items))

    def op_append(self) -> None:
        item = self.pop()
        self.extend_list([item])

    def op_appends(self) -> None:
        items = self.pop_mark()
        self.extend_list(items)

    def op_setitem(self) -> None:
        value = self.pop()
        key = self.pop()
        self.set_items(self.top(), [key, value])

    def op_setitems(self) -> None:
        items = self.pop_mark()
        self.set_items(self.top(), items)

    def op_additems(self) -> None:
        items = self.pop_mark()
        target = self.top()
        if type(target) is not set or not all(map(_is_plain_key, items)):
            raise Refused('refused, it adds items other than strings or numbers to a set')
        target.update(items)

    def op_put(self, index_form: str) -> None:
        index = self.unpack(index_form)
        self.memo[index] = self.top()

    def op_memoize(self) -> None:
        self.memo[len(self.memo)] = self.top()

    def op_get(self, index_form: str) -> None:
        index = self.unpack(index_form)
        if index not in self.memo:
            raise Refused('refused, its pickle is malformed (unknown memo entry)')
        value = self.memo[index]
        if isinstance(value, _Unfinished) and value.result is not None:
            value = value.result
        self.stack.append(value)

    def op_global(self) -> None:
        module = self.read_line()
        name = self.read_line()
        self.push_global(f'{module}.{name}')

    def op_stack_global(self) -> None:
        name = self.pop()
        module = self.pop()
        if type(module) is not str or type(name) is not str:
            raise Refused('refused, its pickle is malformed (STACK_GLOBAL)')
        self.push_global(f'{module}.{name}')

    def op_reduce(self) -> None:
        args = self.pop()
        function = self.pop()
        if not (isinstance(function, Global) and function.name in CALLS
                and type(args) is tuple):
            name = function.name if isinstance(function, Global) else type(function).__name__
            raise Refused(f'refused, it calls {name}, which is only a name here')
        try:
            value = getattr(self, CALLS[function.name])(*args)
        except TypeError as error:  # wrong argument count
            raise Refused(f'refused, it calls {function.name} with unexpected arguments'
                          ) from error
        if function.name == 'collections.OrderedDict':
            self.dicts_of[id(value)] = (value, 'OrderedDict')
        self.stack.append(value)

    def op_newobj(self) -> None:
        args = self.pop()
        cls = self.pop()
        kind = NEW_OBJECTS.get(cls.name) if isinstance(cls, Global) else None
        if kind is None or args != ():
            raise Refused('refused, it creates an object of a class no checkpoint needs')
        if kind == 'HistoryBuffer':
            self.stack.append(_Unfinished(self.finish_history_buffer))
            return
        value: dict = {}
        self.dicts_of[id(value)] = (value, kind)
        self.stack.append(value)

    def op_build(self) -> None:
        state = self.pop()
        target = self.top()
        if isinstance(target, _Unfinished) and target.result is None:
            target.result = target.finish(target, state)
            self.stack[-1] = target.result
            return
        kind = self.dicts_of.get(id(target), (None, None))[1]
        if kind is None:
            raise Refused(f'refused, it sets the state of a {type(target).__name__}')
        # The __dict__ of an OrderedDict or CfgNode is flags (or a way to shadow ``.get``):
        # dropped. A Namespace's is its data.
        if kind == 'Namespace':
            if type(state) is not dict or not all(type(key) is str for key in state):
                raise Refused('refused, an argparse.Namespace has a state that is not '
                              'named values')
            target.update(state)

    def op_binpersid(self) -> None:
        pid = self.pop()
        storage = self.persistent_load(pid)
        self.storages[id(storage)] = storage
        self.stack.append(storage)

    # --- the globals of CALLS, each checking its arguments ---
    def call_rebuild_tensor(self, storage, offset, size, stride, requires_grad, hooks,
                            metadata=None) -> torch.Tensor:
        if type(requires_grad) is not bool or not _no_hooks(hooks) or metadata:
            raise Refused('refused, a tensor carries hooks or metadata')
        if self.storages.get(id(storage)) is not storage:
            raise Refused('refused, it rebuilds a tensor from something other than a '
                          'storage of the file')
        return storage.view(offset, size, stride)

    def call_rebuild_parameter(self, data, requires_grad, hooks) -> torch.nn.Parameter:
        if type(data) is not torch.Tensor or type(requires_grad) is not bool \
                or not _no_hooks(hooks):
            raise Refused('refused, a parameter is not a plain tensor without hooks')
        return torch.nn.Parameter(data, requires_grad)

    def call_ordered_dict(self, *args) -> dict:
        if args:
            raise Refused('refused, it calls collections.OrderedDict with arguments')
        return {}

    def call_size(self, dims) -> torch.Size:
        if type(dims) is not tuple or not all(map(is_int, dims)):
            raise Refused('refused, it calls torch.Size with non-integers')
        return torch.Size(dims)

    def call_latin1_encode(self, text, encoding) -> bytes:
        if type(text) is not str or encoding != 'latin1':
            raise Refused('refused, it calls _codecs.encode other than for latin1 bytes')
        return text.encode('latin1')

    def call_set(self, items=()) -> set:
        return _plain_collection(set, items)

    def call_frozenset(self, items=()) -> frozenset:
        return _plain_collection(frozenset, items)

    def call_getattr(self, owner, name) -> str:
        # mmengine pickles HistoryBuffer's statistics as getattr(HistoryBuffer, 'mean').
        if not (isinstance(owner, Global) and owner.name == _HISTORY_BUFFER
                and name in HISTORY_BUFFER_STATISTICS):
            raise Refused(f'refused, it calls builtins.getattr(..., {name!r}), which no '
                          'checkpoint needs')
        return name

    def call_numpy_dtype(self, code, align, copy) -> _Unfinished:
        if code not in NUMPY_DTYPES or (align, copy) != (False, True):
            raise Refused(f'refused, it holds a numpy dtype {code!r}, not a plain number type '
                          '(object arrays hold pointers); save plain numeric arrays')
        return _Unfinished(self.finish_dtype, code)

    def call_numpy_reconstruct(self, subtype, shape, type_code) -> _Unfinished:
        if not (isinstance(subtype, Global) and subtype.name == 'numpy.ndarray'
                and shape == (0, ) and type_code == b'b'):
            raise Refused('refused, it calls numpy _reconstruct other than as arrays pickle')
        return _Unfinished(self.finish_ndarray)

    def call_numpy_scalar(self, dtype, raw) -> np.generic:
        if not isinstance(dtype, np.dtype) or type(raw) is not bytes \
                or len(raw) != dtype.itemsize:
            raise Refused('refused, it calls numpy scalar with other than a number\'s bytes')
        return np.frombuffer(raw, dtype)[0]

    # --- BUILD of the objects left unfinished by the calls and NEWOBJ above ---
    def finish_dtype(self, dtype: _Unfinished, state: Any) -> np.dtype:
        if type(state) is not tuple or len(state) != 8 or state[0] != 3 \
                or state[1] not in ('<', '|') or state[2:] != (None, None, None, -1, -1, 0):
            raise Refused('refused, it holds a numpy dtype that is not a plain number type')
        return np.dtype(state[1] + dtype.argument)

    def finish_ndarray(self, array: _Unfinished, state: Any) -> np.ndarray:
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise Refused('refused, it holds a numpy array in an unknown form')
        _, shape, dtype, fortran_order, raw = state
        if not (type(shape) is tuple and all(map(is_int, shape))
                and isinstance(dtype, np.dtype) and type(fortran_order) is bool
                and type(raw) is bytes and len(raw) == math.prod(shape) * dtype.itemsize):
            raise Refused('refused, it holds a numpy array whose bytes do not match its '
                          'shape and plain number dtype')
        order = 'F' if fortran_order else 'C'
        return np.frombuffer(raw, dtype).reshape(shape, order=order).copy()

    def finish_history_buffer(self, buffer: _Unfinished, state: Any) -> HistoryBuffer:
        fields = state if type(state) is dict else {}
        histories = (fields.get('_log_history'), fields.get('_count_history'))
        max_length = fields.get('max_length')
        if not (set(fields) <= {'_log_history', '_count_history', 'max_length',
                                'statistics_methods'}
                and all(isinstance(history, np.ndarray) and history.ndim == 1
                        for history in histories) and is_int(max_length, 1)
                and len(histories[0]) == len(histories[1])):
            raise Refused('a HistoryBuffer without numeric histories and max_length; '
                          're-save it')
        # A fresh buffer: the pickled statistics_methods never reach the class-wide table.
        return HistoryBuffer(*histories, max_length)

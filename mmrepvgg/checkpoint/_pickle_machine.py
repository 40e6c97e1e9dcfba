"""The pickle machine: a pickle's bytes in, inert data out; nothing it names ever runs.

A loop over the opcodes of :data:`OPCODES` and the globals of :data:`CALLS` and :data:`NAMES`;
anything else is refused (docs/checkpoints.md)."""
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

MAX_INT_BYTES = 64
MAX_NESTING = 100

# The opcodes of protocols 2 to 5 the machine knows: name, handler method, its arguments.
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
    b'l': ('LIST', 'push_marked', list), b't': ('TUPLE', 'push_marked', tuple),
    b'\x85': ('TUPLE1', 'op_tuple_of', 1), b'\x86': ('TUPLE2', 'op_tuple_of', 2),
    b'\x87': ('TUPLE3', 'op_tuple_of', 3), b'\x91': ('FROZENSET', 'op_frozenset'),
    b'a': ('APPEND', 'op_append', False), b'e': ('APPENDS', 'op_append', True),
    b's': ('SETITEM', 'op_setitem', False), b'u': ('SETITEMS', 'op_setitem', True),
    b'\x90': ('ADDITEMS', 'op_additems'), b'q': ('BINPUT', 'op_put', '<B'),
    b'r': ('LONG_BINPUT', 'op_put', '<I'), b'\x94': ('MEMOIZE', 'op_put', None),
    b'h': ('BINGET', 'op_get', '<B'), b'j': ('LONG_BINGET', 'op_get', '<I'),
    b'c': ('GLOBAL', 'op_global'), b'\x93': ('STACK_GLOBAL', 'op_stack_global'),
    b'R': ('REDUCE', 'op_reduce'), b'\x81': ('NEWOBJ', 'op_newobj'), b'b': ('BUILD', 'op_build'),
    b'Q': ('BINPERSID', 'op_binpersid')}

# The globals REDUCE may call, each with the method checking its arguments.
CALLS: Dict[str, str] = {
    'torch._utils._rebuild_tensor_v2': 'call_rebuild_tensor',
    'torch._utils._rebuild_parameter': 'call_rebuild_parameter',
    'collections.OrderedDict': 'call_ordered_dict',
    'torch.Size': 'call_size',
    '_codecs.encode': 'call_latin1_encode',
    **{f'{module}.{name}': f'call_{name}' for module in ('builtins', '__builtin__')
       for name in ('set', 'frozenset')},
}
# Classes NEWOBJ may instantiate (no code of theirs runs): a dict, or what BUILD finishes.
NEW_OBJECTS = {'yacs.config.CfgNode': 'CfgNode', 'argparse.Namespace': 'Namespace'}
# torch's storage classes as pickles name them, and the dtype of their elements.
STORAGE_DTYPES: Dict[str, torch.dtype] = {
    f'torch.{name}Storage': dtype for name, dtype in (
        ('Float', torch.float32), ('Double', torch.float64), ('Half', torch.float16),
        ('BFloat16', torch.bfloat16), ('Long', torch.int64), ('Int', torch.int32),
        ('Short', torch.int16), ('Char', torch.int8), ('Byte', torch.uint8),
        ('Bool', torch.bool))}
# Globals that may only be named: a storage class (an argument) or a class of NEW_OBJECTS.
NAMES = frozenset({*STORAGE_DTYPES, *NEW_OBJECTS})
_PLAIN_KEY_TYPES = (str, int, float, bool, type(None), bytes)
_CONTAINER_TYPES = (dict, list, tuple, set, frozenset)

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
    **dict.fromkeys(('torch.ComplexFloatStorage', 'torch.ComplexDoubleStorage'),
                    'a complex tensor, whose imaginary part would be dropped; save real tensors'),
}


class Refused(Exception):
    """What is wrong with the file, as the second half of a one-line message."""


@dataclass(frozen=True)
class _Global:
    """A global the pickle named: only a name."""
    name: str


class _Unfinished:
    """An object unusable until a later BUILD's ``finish(self, state)`` sets ``result``."""

    def __init__(self, finish: Callable[['_Unfinished', Any], Any], argument: Any = None):
        self.finish, self.argument, self.result = finish, argument, None


def _is_int(value: Any, minimum: int = 0) -> bool:
    return type(value) is int and minimum <= value < 2**62


def _is_plain_key(value: Any) -> bool:
    # Flat tuples only: a nested tuple key hashes in exponential time.
    if type(value) is tuple:
        return all(type(item) in _PLAIN_KEY_TYPES for item in value)
    return type(value) in _PLAIN_KEY_TYPES


def _plain_collection(factory: type, items: Any) -> Any:
    if type(items) not in (list, tuple) or not all(map(_is_plain_key, items)):
        raise Refused(f'refused, it builds a {factory.__name__} of non-plain items')
    return factory(items)


def _usable(value: Any) -> Any:
    if isinstance(value, _Unfinished):
        if value.result is None:
            raise Refused('refused, it uses an object before its data is set')
        return value.result
    return value


class _PickleMachine:
    """Reads the pickle at ``data[position:]``; tensors are only ``view(offset, shape,
    stride)`` of what ``persistent_load(pid)`` returns."""
    calls, new_objects, names = CALLS, NEW_OBJECTS, NAMES

    def __init__(self, data: bytes, position: int, persistent_load: Callable[[Any], Any]):
        self.data, self.position, self.persistent_load = data, position, persistent_load
        self.stack: List[Any] = []
        self.marks: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        # Keyed by id, each holding its object so that the id stays its own.
        self.storages: Dict[int, Any] = {}
        self.heights: Dict[int, Tuple[Any, int]] = {}
        self.nested: Dict[int, Any] = {}
        self.dicts_of: Dict[int, Tuple[dict, str]] = {}
        self.finished = False

    def run(self) -> Tuple[Any, int]:
        """The pickle's value and the position after its STOP; raises :class:`Refused`."""
        while not self.finished:
            opcode = self.read(1)
            if opcode not in OPCODES:
                raise Refused(f'refused, its pickle uses opcode {opcode!r}, which no '
                              'checkpoint needs')
            _, handler, *arguments = OPCODES[opcode]
            getattr(self, handler)(*arguments)
        return self.stack.pop(), self.position

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
        self.top()  # refuses an empty stack
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

    def nest(self, parent: Any, children: Iterable[Any]) -> None:
        # As pickle writes them, a container is filled before it goes into another and
        # never changed after: so nesting is bounded as it is built, and never cyclic.
        if id(parent) in self.nested:
            raise Refused('refused, it changes a container after putting it in another')
        height = self.heights.get(id(parent), (parent, 1))[1]
        for child in children:
            if type(child) in _CONTAINER_TYPES:
                if child is parent:
                    raise Refused('refused, a container contains itself')
                self.nested[id(child)] = child
                height = max(height, self.heights.get(id(child), (child, 1))[1] + 1)
        if height > MAX_NESTING:
            raise Refused(f'refused, containers nest more than {MAX_NESTING} deep')
        self.heights[id(parent)] = (parent, height)

    def set_items(self, target: Any, items: List[Any]) -> None:
        if type(target) is not dict or len(items) % 2:
            raise Refused(f'refused, it sets items of a {type(target).__name__}')
        self.nest(target, items[1::2])
        for index in range(0, len(items), 2):
            if not _is_plain_key(items[index]):
                raise Refused('refused, a dict key is not a string or number')
            target[items[index]] = items[index + 1]

    def push_global(self, name: str) -> None:
        if name not in self.calls and name not in self.names:
            hint = REFUSAL_HINTS.get(name)
            reason = f'which makes {hint}' if hint else (
                'which no checkpoint needs; it may be malicious, do not load it elsewhere '
                'with weights_only=False')
            raise Refused(f'refused, it calls {name}, {reason}')
        self.stack.append(_Global(name))

    # The handlers of OPCODES.
    def op_proto(self) -> None:
        if self.read(1)[0] not in (2, 3, 4, 5):
            raise Refused('refused, its pickle protocol is not 2 to 5')

    def op_frame(self) -> None:
        self.read(8)  # a length the loop does not need

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
        self.stack.append(self.read(self.unpack(length_form)).decode('utf-8', 'surrogatepass'))

    def push_bytes(self, length_form: str) -> None:
        self.stack.append(self.read(self.unpack(length_form)))

    def push_empty(self, container_type: type) -> None:
        self.stack.append(container_type())

    def op_dict(self) -> None:
        value: dict = {}
        self.set_items(value, self.pop_mark())
        self.stack.append(value)

    def push_marked(self, container_type: type) -> None:
        items = self.pop_mark()
        self.push_container(container_type(items), items)

    def push_container(self, value: Any, items: List[Any]) -> None:
        self.nest(value, items)
        self.stack.append(value)

    def op_frozenset(self) -> None:
        items = self.pop_mark()
        self.push_container(_plain_collection(frozenset, items), items)

    def op_tuple_of(self, count: int) -> None:
        items = [self.pop() for _ in range(count)][::-1]
        self.push_container(tuple(items), items)

    def op_append(self, marked: bool) -> None:
        items = self.pop_mark() if marked else [self.pop()]
        target = self.top()
        if type(target) is not list:
            raise Refused(f'refused, it appends to a {type(target).__name__}')
        self.nest(target, items)
        target.extend(items)

    def op_setitem(self, marked: bool) -> None:
        # Unmarked: the value is on top, the key under it.
        items = self.pop_mark() if marked else [self.pop(), self.pop()][::-1]
        self.set_items(self.top(), items)

    def op_additems(self) -> None:
        items = self.pop_mark()
        target = self.top()
        if type(target) is not set or not all(map(_is_plain_key, items)):
            raise Refused('refused, it adds items other than strings or numbers to a set')
        self.nest(target, items)
        target.update(items)

    def op_put(self, index_form: Optional[str]) -> None:
        index = len(self.memo) if index_form is None else self.unpack(index_form)
        self.memo[index] = self.top()

    def op_get(self, index_form: str) -> None:
        index = self.unpack(index_form)
        if index not in self.memo:
            raise Refused('refused, its pickle is malformed (unknown memo entry)')
        value = self.memo[index]
        if isinstance(value, _Unfinished) and value.result is not None:
            value = value.result
        self.stack.append(value)

    def op_global(self) -> None:
        self.push_global(f'{self.read_line()}.{self.read_line()}')

    def op_stack_global(self) -> None:
        name = self.pop()
        module = self.pop()
        if type(module) is not str or type(name) is not str:
            raise Refused('refused, its pickle is malformed (STACK_GLOBAL)')
        self.push_global(f'{module}.{name}')

    def op_reduce(self) -> None:
        args = self.pop()
        function = self.pop()
        if not (isinstance(function, _Global) and function.name in self.calls
                and type(args) is tuple):
            name = function.name if isinstance(function, _Global) else type(function).__name__
            raise Refused(f'refused, it calls {name}, which is only a name here')
        try:
            self.stack.append(getattr(self, self.calls[function.name])(*args))
        except TypeError as error:  # wrong argument count
            raise Refused(f'refused, it calls {function.name} with unexpected arguments'
                          ) from error

    def op_newobj(self) -> None:
        args = self.pop()
        cls = self.pop()
        kind = self.new_objects.get(cls.name) if isinstance(cls, _Global) else None
        if kind is None or args != ():
            raise Refused('refused, it creates an object of a class no checkpoint needs')
        self.stack.append(_Unfinished(getattr(self, kind)) if kind.startswith('finish_')
                          else self.new_dict(kind))

    def new_dict(self, kind: str) -> dict:  # an object of kind, as a dict BUILD may fill
        value: dict = {}
        self.dicts_of[id(value)] = (value, kind)
        return value

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
        # An OrderedDict's or CfgNode's __dict__ is flags (or shadows .get): dropped.
        if kind == 'Namespace':
            if type(state) is not dict or not all(type(key) is str for key in state):
                raise Refused('refused, an argparse.Namespace has a state that is not '
                              'named values')
            self.nest(target, state.values())
            target.update(state)

    def op_binpersid(self) -> None:
        pid = self.pop()
        storage = self.persistent_load(pid)
        self.storages[id(storage)] = storage
        self.stack.append(storage)

    # The globals of CALLS.
    def call_rebuild_tensor(self, storage, offset, size, stride, requires_grad, hooks,
                            metadata=None) -> torch.Tensor:
        # torch pickles backward hooks as OrderedDict(), {} here; autograd would call them.
        if type(requires_grad) is not bool or type(hooks) is not dict or hooks or metadata:
            raise Refused('refused, a tensor carries hooks or metadata')
        if self.storages.get(id(storage)) is not storage:
            raise Refused('refused, it rebuilds a tensor from something other than a '
                          'storage of the file')
        return storage.view(offset, size, stride)

    def call_rebuild_parameter(self, data, requires_grad, hooks) -> torch.nn.Parameter:
        if type(data) is not torch.Tensor or type(requires_grad) is not bool \
                or type(hooks) is not dict or hooks:
            raise Refused('refused, a parameter is not a plain tensor without hooks')
        return torch.nn.Parameter(data, requires_grad)

    def call_ordered_dict(self, *args) -> dict:
        if args:
            raise Refused('refused, it calls collections.OrderedDict with arguments')
        return self.new_dict('OrderedDict')

    def call_size(self, dims) -> torch.Size:
        if type(dims) is not tuple or not all(map(_is_int, dims)):
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

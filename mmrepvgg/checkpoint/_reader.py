"""The one checkpoint reader: torch zip, torch legacy or safetensors bytes in, inert data
out, never through ``torch.load``; what each format must satisfy: docs/checkpoints.md."""
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
from ._pickle_machine import (CALLS, NAMES, NEW_OBJECTS, REFUSAL_HINTS, STORAGE_DTYPES, Refused,
                              _Global, _is_int, _PickleMachine, _Unfinished)
from ._remote import _checkpoint_local_path, _forget_download

ZIP_MAGIC = b'PK\x03\x04'
# A zip record's local header: magic, 22 bytes this reader skips, name and extra lengths.
ZIP_LOCAL_HEADER = struct.Struct('<4s22xHH')
LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001
SAFETENSORS_DTYPES: Dict[str, torch.dtype] = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
    'U8': torch.uint8, 'BOOL': torch.bool}
_LOCATION = re.compile(r'(?:cpu|cuda(?::[0-9]{1,3})?|mps)', re.ASCII)
_STORAGE_KEY = re.compile(r'[0-9]{1,24}', re.ASCII)
_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'
# numpy type codes of plain numbers (never 'O' objects, structured or void types).
NUMPY_DTYPES = ('b1', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8', 'f2', 'f4', 'f8')
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
HISTORY_BUFFER_FIELDS = {'_log_history', '_count_history', 'max_length', 'statistics_methods'}


class _CheckpointPickle(_PickleMachine):
    """The pickle machine with the numpy and mmengine globals of training checkpoints."""
    calls = {**CALLS, 'numpy.dtype': 'call_numpy_dtype',
             'builtins.getattr': 'call_getattr', '__builtin__.getattr': 'call_getattr',
             **{f'{package}.multiarray.{name}': f'call_numpy_{name.strip("_")}' for name in
                ('_reconstruct', 'scalar') for package in ('numpy.core', 'numpy._core')}}
    new_objects = {**NEW_OBJECTS, _HISTORY_BUFFER: 'finish_history_buffer'}
    names = NAMES | {'numpy.ndarray', _HISTORY_BUFFER}

    def call_getattr(self, owner, name) -> str:
        # mmengine pickles HistoryBuffer's statistics as getattr(HistoryBuffer, 'mean').
        if not (isinstance(owner, _Global) and owner.name == _HISTORY_BUFFER
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
        if not (isinstance(subtype, _Global) and subtype.name == 'numpy.ndarray'
                and shape == (0, ) and type_code == b'b'):
            raise Refused('refused, it calls numpy _reconstruct other than as arrays pickle')
        return _Unfinished(self.finish_ndarray)

    def call_numpy_scalar(self, dtype, raw) -> np.generic:
        if not isinstance(dtype, np.dtype) or type(raw) is not bytes \
                or len(raw) != dtype.itemsize:
            raise Refused('refused, it calls numpy scalar with other than a number\'s bytes')
        return np.frombuffer(raw, dtype)[0]

    def finish_dtype(self, dtype: _Unfinished, state: Any) -> np.dtype:
        if type(state) is not tuple or len(state) != 8 or state[0] != 3 \
                or state[1] not in ('<', '|') or state[2:] != (None, None, None, -1, -1, 0):
            raise Refused('refused, it holds a numpy dtype that is not a plain number type')
        return np.dtype(state[1] + dtype.argument)

    def finish_ndarray(self, array: _Unfinished, state: Any) -> np.ndarray:
        if type(state) is not tuple or len(state) != 5 or state[0] != 1:
            raise Refused('refused, it holds a numpy array in an unknown form')
        _, shape, dtype, fortran_order, raw = state
        if not (type(shape) is tuple and all(map(_is_int, shape))
                and isinstance(dtype, np.dtype) and type(fortran_order) is bool
                and type(raw) is bytes and len(raw) == math.prod(shape) * dtype.itemsize):
            raise Refused('refused, it holds a numpy array whose bytes do not match its '
                          'shape and plain number dtype')
        return np.frombuffer(raw, dtype).reshape(
            shape, order='F' if fortran_order else 'C').copy()

    def finish_history_buffer(self, buffer: _Unfinished, state: Any) -> HistoryBuffer:
        fields = state if type(state) is dict else {}
        histories = (fields.get('_log_history'), fields.get('_count_history'))
        max_length = fields.get('max_length')
        if not (set(fields) <= HISTORY_BUFFER_FIELDS and _is_int(max_length, 1)
                and all(isinstance(history, np.ndarray) and history.ndim == 1
                        for history in histories) and len(histories[0]) == len(histories[1])):
            raise Refused('a HistoryBuffer without numeric histories and max_length; '
                          're-save it')
        # A fresh buffer: the pickled statistics_methods never reach the class-wide table.
        return HistoryBuffer(*histories, max_length)


class _Storage:
    """A storage of the file, its elements in the 1-D tensor ``flat``."""

    def __init__(self, flat: torch.Tensor):
        self.flat, self.numel = flat, flat.numel()

    def view(self, offset: Any, shape: Any, stride: Any) -> torch.Tensor:
        if not (_is_int(offset) and type(shape) is tuple and type(stride) is tuple
                and len(shape) == len(stride) <= 16 and all(map(_is_int, shape + stride))):
            raise Refused('refused, a tensor has an invalid offset, shape or stride')
        if _view_exceeds_storage(shape, stride, offset, self.numel):
            plural = '' if self.numel == 1 else 's'
            raise Refused(f'a tensor claims shape {shape} with strides {stride} over '
                          f'{self.numel} stored element{plural}, a damaged or malicious '
                          'view; re-download or re-save the checkpoint')
        return torch.as_strided(self.flat, shape, stride, offset)


def _view_exceeds_storage(shape: tuple, stride: tuple, storage_offset: int,
                          storage_elements: int) -> bool:
    """Whether a strided view names an element outside its storage, or two of its
    elements share one: either lets a few stored bytes claim a huge tensor."""
    if math.prod(shape) == 0:
        return False
    if any(size > 1 and step == 0 for size, step in zip(shape, stride)):
        return True
    last_element = storage_offset + sum((size - 1) * step for size, step in zip(shape, stride))
    return math.prod(shape) > storage_elements or last_element >= storage_elements


def _flat_tensor(raw: bytes, dtype: torch.dtype) -> torch.Tensor:
    if not raw:
        return torch.empty(0, dtype=dtype)
    return _checked_bools(torch.frombuffer(bytearray(raw), dtype=dtype))


def _checked_bools(flat: torch.Tensor) -> torch.Tensor:
    # A bool byte other than 0 or 1 is undefined behaviour in torch's kernels.
    if flat.dtype == torch.bool and flat.numel() and int(flat.view(torch.uint8).max()) > 1:
        raise Refused('refused, a bool tensor holds bytes other than 0 and 1')
    return flat


class _StorageTable:
    """The storages of the persistent ids, each made once by ``make(key, dtype, numel)``."""

    def __init__(self, make: Callable[[str, torch.dtype, int], torch.Tensor], legacy: bool):
        self.make, self.legacy = make, legacy
        self.storages: Dict[str, _Storage] = {}

    def __call__(self, pid: Any) -> _Storage:
        # pid: ('storage', class, key, location, numel), and a view (None) in legacy files.
        length = 6 if self.legacy else 5
        if type(pid) is not tuple or len(pid) != length or pid[0] != 'storage':
            raise Refused('refused, it references data other than a tensor storage')
        storage_class, key, location, numel = pid[1:5]
        name = storage_class.name if isinstance(storage_class, _Global) else None
        if name not in STORAGE_DTYPES:
            raise Refused(f'refused, a storage is of class {name}, not a plain number storage')
        if location == 'meta':
            raise Refused('refused, a storage is on the meta device, which makes '
                          f'{REFUSAL_HINTS["torch._utils._rebuild_meta_tensor_no_storage"]}')
        if not (type(key) is str and _STORAGE_KEY.fullmatch(key) and type(location) is str
                and _LOCATION.fullmatch(location) and _is_int(numel)
                and (not self.legacy or pid[5] is None)):
            raise Refused('refused, a storage reference is malformed')
        dtype = STORAGE_DTYPES[name]
        if key not in self.storages:
            self.storages[key] = _Storage(self.make(key, dtype, numel))
        if (self.storages[key].flat.dtype, self.storages[key].numel) != (dtype, numel):
            raise Refused(f'refused, storage {key} is declared twice, differently')
        return self.storages[key]


def _zip_record(archive: zipfile.ZipFile, name: str) -> Optional[bytes]:
    """The bytes of record ``name`` (stored, CRC-checked); None if absent."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise Refused(f'record {name} is compressed, which torch.save never does; re-save '
                      'the checkpoint with torch.save')
    if info.flag_bits & 0x1:
        raise Refused(f'record {name} is encrypted; re-save the checkpoint with torch.save')
    try:
        return archive.read(info)  # zipfile checks the CRC-32 as it reads
    except zipfile.BadZipFile as error:
        if 'CRC' in str(error):
            raise Refused(f'record {name} is damaged (its CRC-32 does not match); '
                          're-download or re-save the checkpoint') from error
        raise


def _check_record_ranges(archive: zipfile.ZipFile, data: bytes) -> None:
    # Records that leave the file or overlap would let a few bytes claim many times its size.
    ranges = []
    for info in archive.infolist():
        start, header_size = info.header_offset, ZIP_LOCAL_HEADER.size
        magic, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(
            data[start:start + header_size].ljust(header_size, b'\0'))
        end = start + header_size + name_length + extra_length + info.compress_size
        if magic != ZIP_MAGIC or end > len(data):
            where = 'ends past the end of the file' if magic == ZIP_MAGIC else 'has no header'
            raise Refused(f'truncated or corrupt checkpoint (record {info.filename} {where}); '
                          're-download or re-save it')
        ranges.append((start, end, info.filename))
    ranges.sort()
    for (_, end, name), (next_start, _, next_name) in zip(ranges, ranges[1:]):
        if next_start < end:
            raise Refused(f"refused, the archive's records {name} and {next_name} overlap "
                          '(a few bytes would claim many times the file); re-save the '
                          'checkpoint with torch.save')


def _read_zip(data: bytes) -> Any:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise Refused(f'truncated or corrupt checkpoint ({error}); re-download or re-save '
                      'it') from error
    pickles = [name for name in names if name.count('/') == 1 and name.endswith('/data.pkl')]
    if len(pickles) != 1 or len(set(names)) != len(names):
        raise Refused('refused, the archive has no single data.pkl or repeats a record name '
                      '(torch.save writes neither); re-save the checkpoint')
    prefix = pickles[0][:-len('data.pkl')]
    if any(not name.startswith(prefix) for name in names):
        raise Refused('refused, the archive holds records outside its folder')
    if f'{prefix}constants.pkl' in names or any(n.startswith(f'{prefix}code/') for n in names):
        raise Refused('is a TorchScript archive (torch.jit.save); save model.state_dict() '
                      'with torch.save')
    _check_record_ranges(archive, data)

    def record_of(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        raw = _zip_record(archive, f'{prefix}data/{key}')
        if raw is None or len(raw) != numel * dtype.itemsize:
            raise Refused(f'storage {key} declares {numel} elements but the file holds '
                          f'{0 if raw is None else len(raw)} bytes for it; re-download or '
                          're-save the checkpoint')
        return _flat_tensor(raw, dtype)

    try:
        if _zip_record(archive, f'{prefix}byteorder') not in (None, b'little'):
            raise Refused('stores big-endian tensors; re-save it on a little-endian machine')
        main = _zip_record(archive, f'{prefix}data.pkl')
        return _CheckpointPickle(main, 0, _StorageTable(record_of, legacy=False)).run()[0]
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise Refused(f'truncated or corrupt checkpoint ({error}); re-download or re-save '
                      'it') from error


def _read_legacy(data: bytes) -> Any:
    def no_storages(pid: Any) -> None:
        raise Refused('refused, its header references storages')

    magic, position = _CheckpointPickle(data, 0, no_storages).run()
    if magic != LEGACY_MAGIC_NUMBER:
        raise Refused('not a PyTorch checkpoint (a pickle without torch\'s magic number); '
                      'pass the .pth file written by torch.save')
    protocol, position = _CheckpointPickle(data, position, no_storages).run()
    system, position = _CheckpointPickle(data, position, no_storages).run()
    if protocol != LEGACY_PROTOCOL_VERSION or type(system) is not dict \
            or system.get('little_endian') is not True:
        raise Refused('is a legacy checkpoint of another protocol or byte order; re-save it '
                      'with a current torch')
    declared_bytes = 0

    def filled_later(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        # Bounded by the file: the storages' bytes must all be in it.
        nonlocal declared_bytes
        declared_bytes += numel * dtype.itemsize
        if declared_bytes > len(data):
            raise Refused(f'storage {key} declares more bytes than the file holds; '
                          're-download or re-save the checkpoint')
        return torch.empty(numel, dtype=dtype)

    declared = _StorageTable(filled_later, legacy=True)
    value, position = _CheckpointPickle(data, position, declared).run()
    keys, position = _CheckpointPickle(data, position, no_storages).run()
    # String keys, as torch writes them (a list mixing types once failed to sort).
    if type(keys) is not list or not all(type(key) is str for key in keys) \
            or len(set(keys)) != len(keys) or set(keys) != set(declared.storages):
        raise Refused('its storage list does not name each storage the pickle uses exactly '
                      'once; re-download or re-save the checkpoint')
    for key in keys:
        storage = declared.storages[key]
        if position + 8 > len(data) or int.from_bytes(
                data[position:position + 8], 'little', signed=True) != storage.numel:
            raise Refused(f'storage {key} is stored with another size than it declares; '
                          're-download or re-save the checkpoint')
        position += 8
        end = position + storage.flat.nbytes
        if end > len(data):
            raise Refused('truncated or corrupt checkpoint (a storage ends early); '
                          're-download or re-save it')
        storage.flat.view(torch.uint8).copy_(_flat_tensor(data[position:end], torch.uint8))
        _checked_bools(storage.flat)
        position = end
    if position != len(data):
        raise Refused('holds bytes after its last storage; re-download or re-save it')
    return value


def _unique_json_keys(pairs: List[Tuple[str, Any]]) -> dict:
    if len({key for key, _ in pairs}) != len(pairs):
        raise Refused('not a readable safetensors file (a name repeats in its header)')
    return dict(pairs)


def _read_safetensors(data: bytes) -> Dict[str, torch.Tensor]:
    def unreadable(why: str) -> Refused:
        return Refused(f'not a readable safetensors file ({why}); re-download or re-save it')

    header_length = int.from_bytes(data[:8], 'little')
    if header_length > len(data) - 8:  # also when data is shorter than 8 bytes
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
                    and end - begin == math.prod(shape) * dtype.itemsize):
                raise unreadable(f'the offsets of tensor {name!r} do not tile the data')
            tensors[name] = _flat_tensor(body[begin:end], dtype).reshape(shape)
            end_of_previous = end
    except (KeyError, TypeError, ValueError) as error:
        raise unreadable('a tensor entry lacks dtype, shape or data_offsets') from error
    if end_of_previous != len(body):
        raise unreadable('its data is longer or shorter than its tensors')
    return tensors


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def _read_checkpoint(path: str) -> Any:
    """The inert content of the checkpoint file at ``path``: containers, numbers, strings,
    CPU tensors, numpy arrays, HistoryBuffers; ``{name: tensor}`` for safetensors."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place does not hold the open forever; a
        # folder fails in open (IsADirectoryError), which closes the descriptor it opened.
        with open(path, 'rb', opener=_open_nonblocking) as stream:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise Refused('is not a regular file; pass a checkpoint file')
            data = stream.read(status.st_size + 1)
        if len(data) != status.st_size:
            raise Refused('changed size while being read; run again once it is written')
        if not data:
            raise Refused('is empty (0 bytes); re-download or re-save it')
        if path.endswith('.safetensors') or data[8:9] == b'{':
            return _read_safetensors(data)
        if data.startswith(ZIP_MAGIC):
            return _read_zip(data)
        if data[:1] == b'\x80':
            return _read_legacy(data)
        raise Refused(f'not a PyTorch checkpoint (it starts with {data[:8]!r}); pass the '
                      '.pth file written by torch.save')
    except FileNotFoundError as error:
        raise CheckpointError(f'{path}: no such checkpoint file; check the path') from error
    except IsADirectoryError as error:
        raise CheckpointError(f'{path}: is a folder, not a checkpoint file; pass the .pth '
                              'file inside it') from error
    except OSError as error:
        raise CheckpointError(f'{path}: cannot be read ({error.strerror}); check its '
                              'permissions') from error
    except Refused as error:
        raise CheckpointError(f'{path}: {error}') from None
    except MemoryError:
        raise CheckpointError(f'{path}: does not fit in memory; free memory or use a '
                              'smaller checkpoint') from None
    except (ValueError, OverflowError, RuntimeError) as error:  # torch or numpy refusing
        raise CheckpointError(f'{path}: truncated or corrupt checkpoint '
                              f'({type(error).__name__}); re-download or re-save it') from None


def load_checkpoint_file(source: str) -> Any:
    """:func:`_read_checkpoint` of a path or ``http(s)://`` URL (downloaded once into the
    project's cache, removed if refused); raises :class:`CheckpointError`, one line naming
    the file, what is wrong and what to do."""
    first_read = []  # what verified the download, when this call downloads it
    path = _checkpoint_local_path(source, lambda partial: first_read.append(
        _read_checkpoint(partial)))
    if first_read:
        return first_read[0]
    try:
        return _read_checkpoint(path)
    except CheckpointError:
        _forget_download(path)
        raise

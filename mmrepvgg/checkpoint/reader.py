"""The one checkpoint reader: bytes in, inert data out, nothing from the file ever runs.

Every load of the project ends here (:func:`read_checkpoint_bytes`). The file is opened
once and read whole; everything below works on those bytes and nothing else. This module
reads the containers; the pickles inside them are read by :mod:`.pickle_machine`.

- **torch zip** (``torch.save``, torch >= 1.6): the archive is parsed with ``zipfile`` over
  the bytes read; each record's bytes (local header to end of data) lie in the file and
  overlap no other record's; each record used must be stored (not compressed), match its
  CRC-32 and hold exactly the bytes its storage declares. ``torch.load`` never sees the file.
- **torch legacy** (``_use_new_zipfile_serialization=False``): magic number, protocol,
  system info, the main pickle, the list of storage keys, then each storage as an 8-byte
  element count and its bytes. Every storage the pickle uses must be listed and stored
  once with the size it declared, and nothing may follow the last one.
- **safetensors**: an 8-byte header length, a JSON header, the tensors' bytes; the
  offsets must tile the data exactly.

Bounds: every tensor is a view of bytes of the file, each byte in at most one storage;
containers nest at most :data:`MAX_NESTING` deep, without cycles. Time and memory are thus
linear in the file's size. No allow-list of torch is touched, so the process is unchanged
by construction.
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

import torch

from .errors import CheckpointError
from .pickle_machine import REFUSAL_HINTS, STORAGE_DTYPES, Global, Refused, is_int, read_pickle
from .remote import checkpoint_local_path, forget_download

MAX_NESTING = 100
ZIP_MAGIC = b'PK\x03\x04'
# A zip record's local header: magic, 22 bytes this reader skips, name and extra lengths.
ZIP_LOCAL_HEADER = struct.Struct('<4s22xHH')
LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001
SAFETENSORS_DTYPES: Dict[str, torch.dtype] = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16,
    'BF16': torch.bfloat16, 'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16,
    'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool}
_LOCATION = re.compile(r'(?:cpu|cuda(?::[0-9]{1,3})?|mps)', re.ASCII)
_STORAGE_KEY = re.compile(r'[0-9]{1,24}', re.ASCII)


class Storage:
    """A storage of the file: ``flat`` holds its ``numel`` elements of ``dtype``."""

    def __init__(self, dtype: torch.dtype, numel: int, flat: torch.Tensor):
        self.dtype, self.numel, self.flat = dtype, numel, flat

    def view(self, offset: Any, shape: Any, stride: Any) -> torch.Tensor:
        """The tensor a pickle rebuilds over this storage, if its view stays inside it."""
        if not (is_int(offset) and type(shape) is tuple and type(stride) is tuple
                and len(shape) == len(stride) <= 16 and all(map(is_int, shape + stride))):
            raise Refused('refused, a tensor has an invalid offset, shape or stride')
        if view_exceeds_storage(shape, stride, offset, self.numel):
            plural = '' if self.numel == 1 else 's'
            raise Refused(f'a tensor claims shape {shape} with strides {stride} over '
                          f'{self.numel} stored element{plural}, a damaged or malicious '
                          'view; re-download or re-save the checkpoint')
        return torch.as_strided(self.flat, shape, stride, offset)


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
        raise Refused('refused, a bool tensor holds bytes other than 0 and 1')
    return flat


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
                raise Refused('refused, a container contains itself')
            if id(child) in height:
                tallest[-1] = max(tallest[-1], height[id(child)])
                if len(path) + height[id(child)] > MAX_NESTING:
                    raise Refused(f'refused, containers nest more than {MAX_NESTING} deep')
                continue
            if len(path) >= MAX_NESTING:
                raise Refused(f'refused, containers nest more than {MAX_NESTING} deep')
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


class _StorageTable:
    """The storages a pickle references by persistent id, each made once by
    ``make(key, dtype, numel)``; the same key must be declared the same way each time."""

    def __init__(self, make: Callable[[str, torch.dtype, int], torch.Tensor], legacy: bool):
        self.make, self.legacy = make, legacy
        self.storages: Dict[str, Storage] = {}

    def __call__(self, pid: Any) -> Storage:
        dtype, key, numel = self.storage_reference(pid)
        if key not in self.storages:
            self.storages[key] = Storage(dtype, numel, self.make(key, dtype, numel))
        if (self.storages[key].dtype, self.storages[key].numel) != (dtype, numel):
            raise Refused(f'refused, storage {key} is declared twice, differently')
        return self.storages[key]

    def storage_reference(self, pid: Any) -> Tuple[torch.dtype, str, int]:
        """``(dtype, key, numel)`` of a persistent id ``('storage', class, key, location,
        numel)`` (legacy files add a view, which must be None)."""
        length = 6 if self.legacy else 5
        if type(pid) is not tuple or len(pid) != length or pid[0] != 'storage':
            raise Refused('refused, it references data other than a tensor storage')
        storage_class, key, location, numel = pid[1:5]
        name = storage_class.name if isinstance(storage_class, Global) else None
        if name not in STORAGE_DTYPES:
            raise Refused(f'refused, a storage is of class {name}, not a plain number storage')
        if location == 'meta':
            raise Refused('refused, a storage is on the meta device, which makes '
                          f'{REFUSAL_HINTS["torch._utils._rebuild_meta_tensor_no_storage"]}')
        if not (type(key) is str and _STORAGE_KEY.fullmatch(key) and type(location) is str
                and _LOCATION.fullmatch(location) and is_int(numel)
                and (not self.legacy or pid[5] is None)):
            raise Refused('refused, a storage reference is malformed')
        return STORAGE_DTYPES[name], key, numel


def _zip_record(archive: zipfile.ZipFile, name: str) -> Optional[bytes]:
    """The bytes of record ``name``, stored and CRC-checked; None if absent."""
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
    """Refuse records whose bytes, local header to end of data, leave the file or overlap
    another record's: overlapping stored records, each with a correct CRC, let a few bytes
    of the file claim many times its size."""
    ranges = []
    for info in archive.infolist():
        header = data[info.header_offset:info.header_offset + ZIP_LOCAL_HEADER.size]
        magic, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(
            header.ljust(ZIP_LOCAL_HEADER.size, b'\0'))
        end = (info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length
               + info.compress_size)
        if magic != ZIP_MAGIC or end > len(data):
            where = 'ends past the end of the file' if magic == ZIP_MAGIC else 'has no header'
            raise Refused(f'truncated or corrupt checkpoint (record {info.filename} {where}); '
                          're-download or re-save it')
        ranges.append((info.header_offset, end, info.filename))
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
        return read_pickle(main, 0, _StorageTable(record_of, legacy=False))[0]
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise Refused(f'truncated or corrupt checkpoint ({error}); re-download or re-save '
                      'it') from error


def _read_legacy(data: bytes) -> Any:
    def no_storages(pid: Any) -> None:
        raise Refused('refused, its header references storages')

    magic, position = read_pickle(data, 0, no_storages)
    if magic != LEGACY_MAGIC_NUMBER:
        raise Refused('not a PyTorch checkpoint (a pickle without torch\'s magic number); '
                      'pass the .pth file written by torch.save')
    protocol, position = read_pickle(data, position, no_storages)
    system, position = read_pickle(data, position, no_storages)
    if protocol != LEGACY_PROTOCOL_VERSION or type(system) is not dict \
            or system.get('little_endian') is not True:
        raise Refused('is a legacy checkpoint of another protocol or byte order; re-save it '
                      'with a current torch')
    declared_bytes = [0]

    def filled_later(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        # Bounded by the file: the storages' bytes must all be in it.
        declared_bytes[0] += numel * dtype.itemsize
        if declared_bytes[0] > len(data):
            raise Refused(f'storage {key} declares more bytes than the file holds; '
                          're-download or re-save the checkpoint')
        return torch.empty(numel, dtype=dtype)

    declared = _StorageTable(filled_later, legacy=True)
    value, position = read_pickle(data, position, declared)
    keys, position = read_pickle(data, position, no_storages)
    # Keys of other types would make the comparison below fail instead of refusing.
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
        if storage.numel:
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
            if not (type(shape) is list and all(map(is_int, shape)) and begin
                    == end_of_previous and is_int(end) and end <= len(body)
                    and end - begin == math.prod(shape) * dtype.itemsize):
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
        Refused: what is wrong, the second half of a message naming the file.
    """
    if not data:
        raise Refused('is empty (0 bytes); re-download or re-save it')
    if is_safetensors or data[8:9] == b'{':
        return _read_safetensors(data)
    if data.startswith(ZIP_MAGIC):
        content = _read_zip(data)
    elif data[:1] == b'\x80':
        content = _read_legacy(data)
    else:
        raise Refused(f'not a PyTorch checkpoint (it starts with {data[:8]!r}); pass the '
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
                raise Refused('is a folder, not a checkpoint file; pass the .pth file '
                              'inside it')
            if not stat.S_ISREG(status.st_mode):
                raise Refused('is not a regular file; pass a checkpoint file')
            data = stream.read(status.st_size + 1)
        if len(data) != status.st_size:
            raise Refused('changed size while being read; run again once it is written')
        return read_checkpoint_bytes(data, path.endswith('.safetensors'))
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

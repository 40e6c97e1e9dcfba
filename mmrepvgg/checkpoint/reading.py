"""Reading a checkpoint without executing anything stored in it.

1. The file is identified: safetensors (read by the safetensors library, no pickle at
   all), a torch zip archive (every record's CRC is checked first, so a flipped bit is
   reported, not evaluated) or a legacy torch pickle.
2. Pickles are read by ``torch.load(weights_only=True)`` with the mmengine globals of
   :mod:`.mmengine_globals` admitted for that load only; what that step refuses although it
   is data (a yacs ``CfgNode``) is read by :mod:`.unpickling`'s restricted unpickler, which
   refuses any call outside its audited list. Nothing is ever read with an unrestricted
   unpickler.
3. The result is made plain data and every tensor is checked (:mod:`.plain_data`).
"""
import os
import pickle
import zipfile
from typing import Any, Optional

import safetensors
import safetensors.torch
import torch

from .errors import CheckpointError, UnsafePickleError
from .mmengine_globals import mmengine_safe_globals
from .plain_data import UnusableContentError, plain_data
from .remote import checkpoint_local_path
from .unpickling import restricted_pickle_module

# How every file torch.save writes begins: a zip archive (torch >= 1.6) or a pickle.
ZIP_MAGIC, PICKLE_MAGIC = b'PK\x03\x04', b'\x80'


def _first_sentence(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].split('. ')[0].rstrip('.') if lines else type(error).__name__


def _unreadable(path: str, error: BaseException) -> CheckpointError:
    return CheckpointError(f'{path}: truncated or corrupt checkpoint ({_first_sentence(error)});'
                           ' re-download or re-save it')


def _file_kind(path: str) -> str:
    """``'safetensors'``, ``'zip'`` or ``'pickle'``; raises CheckpointError for anything
    that is none of them."""
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
    # safetensors: an 8-byte header length, then the JSON header.
    if path.endswith('.safetensors') or head[8:9] == b'{':
        return 'safetensors'
    if head.startswith(ZIP_MAGIC):
        return 'zip'
    if head.startswith(PICKLE_MAGIC):
        return 'pickle'
    raise CheckpointError(f'{path}: not a PyTorch checkpoint (it starts with {head[:8]!r}); '
                          'pass the .pth file written by torch.save')


def _check_zip_records(path: str) -> None:
    """Refuse an archive whose records are compressed (torch.save stores them) or whose
    bytes no longer match their CRC-32. An archive zipfile cannot open at all (truncated)
    is left to torch.load, which reports it as before."""
    try:
        with zipfile.ZipFile(path) as archive:
            compressed = [record.filename for record in archive.infolist()
                          if record.compress_type != zipfile.ZIP_STORED]
            damaged = None if compressed else archive.testzip()
    except zipfile.BadZipFile:
        return
    except (OSError, EOFError) as error:
        raise _unreadable(path, error) from error
    if compressed:
        raise CheckpointError(f'{path}: record {compressed[0]} is compressed, which torch.save '
                              'never does; re-save the checkpoint with torch.save')
    if damaged:
        raise CheckpointError(f'{path}: record {damaged} is damaged (its CRC-32 does not '
                              'match); re-download or re-save the checkpoint')


def _load_pickled(path: str, map_location: Any) -> Any:
    try:
        with mmengine_safe_globals():
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        weights_only_error: Optional[BaseException] = error
    except Exception as error:  # torch raises several types for the same causes
        raise _unreadable(path, error) from error
    try:
        return torch.load(path, map_location=map_location, weights_only=False,
                          pickle_module=restricted_pickle_module())
    except UnsafePickleError as error:
        raise CheckpointError(
            f'{path}: refused, {error} while loading, which no checkpoint needs; it may be '
            'malicious, do not load it elsewhere with weights_only=False') from error
    except Exception as error:  # the restricted reader fails like weights_only did
        raise _unreadable(path, weights_only_error) from error


def _load_safetensors(path: str, map_location: Any) -> dict:
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else 'cpu'
    try:
        return safetensors.torch.load_file(path, device=device)
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f'{path}: not a readable safetensors file '
                              f'({_first_sentence(error)}); re-download or re-save it'
                              ) from error


def load_checkpoint_file(source: str, map_location: Any = 'cpu') -> Any:
    """Read a checkpoint without executing anything stored in it.

    Args:
        source: a ``.pth``/``.safetensors`` path, or an ``http(s)://`` URL (downloaded once
            into torch.hub's cache, see :func:`.remote.checkpoint_local_path`).
        map_location: as in ``torch.load``; the device tensors land on.

    Returns:
        Plain data: dicts, lists, tuples, tensors, numbers, strings, numpy arrays and
        mmengine HistoryBuffers; a safetensors file gives ``{name: tensor}``.

    Raises:
        CheckpointError: one line naming the file, what is wrong and what to do: missing,
            unreadable, truncated, damaged (CRC), not a checkpoint, a pickle that would call
            code, or a tensor that cannot be used (sparse, quantized, meta, complex, or a
            view larger than its storage).
    """
    path = checkpoint_local_path(source)
    kind = _file_kind(path)
    if kind == 'safetensors':
        content = _load_safetensors(path, map_location)
    else:
        if kind == 'zip':
            _check_zip_records(path)
        content = _load_pickled(path, map_location)
    try:
        return plain_data(content)
    except UnusableContentError as error:
        raise CheckpointError(f'{path}: {error}') from error
    except RecursionError as error:
        raise CheckpointError(f'{path}: nests containers too deeply to be a checkpoint; '
                              're-save it') from error

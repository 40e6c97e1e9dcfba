"""Atomic writing of checkpoints, ONNX files and reports, and the tools' output guard
(docs/checkpoints.md): a hidden ``.NAME.HOST.PID.RANDOM.partial`` file, flushed, then linked
(or, with ``overwrite``, renamed) onto the output; never left behind by a failure or signal."""
import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import threading
from typing import Any, Iterable, Iterator, Mapping, Union

import torch

from .errors import CheckpointError

_CLEANED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WRITE_LIMITS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# What os.link raises where the filesystem has no hard links.
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)


def _host() -> str:
    return re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname())[:64] or 'host'


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _sweep_stale_partials(path: str) -> list:
    """Remove and return the partial files of ``path`` left by dead writers of this host
    (after a kill -9); other hosts' PIDs mean nothing here."""
    folder, name = os.path.split(path)
    pattern = re.compile(rf'\.{re.escape(name)}\.{re.escape(_host())}\.([0-9]+)\.[0-9a-f]+'
                         r'\.partial[.A-Za-z0-9]*', re.ASCII)
    removed = []
    for entry in os.listdir(folder):
        match = pattern.fullmatch(entry)
        if match and not _process_is_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):  # another sweeper was first
                os.unlink(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
    return removed


Inputs = Union[Iterable[str], Mapping[str, str]]


def _check_not_an_input(path: str, inputs: Inputs) -> None:
    if not os.path.exists(path):
        return
    named = inputs.items() if isinstance(inputs, Mapping) else [
        ('input', source) for source in inputs]
    for role, source in named:
        if source and os.path.exists(source) and os.path.samefile(path, source):
            raise CheckpointError(f'{path}: is the {role} {source} (or a link to it); write '
                                  'to another path')


def check_output(path: str, inputs: Inputs = (), overwrite: bool = False) -> None:
    """The tools' output guard, before any work: raises :class:`CheckpointError` if
    ``path`` is one of ``inputs`` (paths, or ``{role: path}``; links count), and
    ``FileExistsError`` if it exists unless ``overwrite`` (``--force``)."""
    _check_not_an_input(path, inputs)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f'{path} exists; pass --force to replace it')


@contextlib.contextmanager
def _removed_on_signal(partial_path: str) -> Iterator[None]:
    """While the body runs, SIGTERM/SIGINT remove ``partial_path``, then reach the previous
    handler (only in the main thread, the one that may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _CLEANED_SIGNALS}

    def remove_and_redeliver(number, frame):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial_path)
        for restored_number, handler in previous.items():
            signal.signal(restored_number, handler)
        os.kill(os.getpid(), number)

    for number, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(number, remove_and_redeliver)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _publish(partial_path: str, path: str, overwrite: bool) -> None:
    with open(partial_path, 'rb+') as stream:
        os.fsync(stream.fileno())
    if overwrite:
        os.replace(partial_path, path)
        return
    # link fails if path exists, even if it appeared after the check at the start (two
    # runs at once); rename would silently replace it.
    appeared = FileExistsError(f'{path} appeared while writing it (another run?); pass '
                               '--force (overwrite=True) to replace it')
    try:
        os.link(partial_path, path)
    except FileExistsError:
        raise appeared from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        # FAT/exFAT and some network shares have no hard links: check, then rename,
        # which leaves only the moment between the two for another run to slip in.
        if os.path.exists(path):
            raise appeared from None
        os.rename(partial_path, path)
    # atomic_output removes the partial file left beside a link.


@contextlib.contextmanager
def atomic_output(path: str, overwrite: bool = False, inputs: Inputs = (),
                  suffix: str = '') -> Iterator[str]:
    """Yield a partial file's path in ``path``'s folder to write to (ending in ``suffix``);
    on success, flush it and publish it as ``path``. Raises as :func:`check_output` (also for
    a ``path`` that appears while writing) and :class:`CheckpointError` for a full disk."""
    path = os.path.abspath(path)
    inputs = dict(inputs) if isinstance(inputs, Mapping) else list(inputs)
    check_output(path, inputs, overwrite)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _sweep_stale_partials(path)
    folder, name = os.path.split(path)
    partial_path = os.path.join(folder, f'.{name}.{_host()}.{os.getpid()}.'
                                        f'{secrets.token_hex(4)}.partial{suffix}')
    os.close(os.open(partial_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with _removed_on_signal(partial_path):
            yield partial_path
            _check_not_an_input(path, inputs)  # a link to an input may have appeared
            _publish(partial_path, path, overwrite)
    except OSError as error:
        if error.errno in _WRITE_LIMITS:
            raise CheckpointError(f'{path}: the disk is full or the file-size limit reached '
                                  f'({error.strerror}); nothing was written, free some space '
                                  'and run again') from error
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial_path)


def save_checkpoint_atomic(checkpoint: Any, path: str, overwrite: bool = False,
                           inputs: Inputs = ()) -> None:
    """``torch.save(checkpoint, path)`` through :func:`atomic_output` (same errors)."""
    with atomic_output(path, overwrite, inputs) as partial_path:
        with open(partial_path, 'wb') as stream:
            try:
                torch.save(checkpoint, stream)
            except RuntimeError as error:
                # torch's zip writer, closing after a failed write, raises 'unexpected pos'
                # over the real cause: Ctrl-C, or a full disk or file-size limit.
                cause = error.__context__
                if isinstance(cause, KeyboardInterrupt):
                    raise KeyboardInterrupt from None
                if isinstance(cause, OSError) and cause.errno in _WRITE_LIMITS:
                    raise CheckpointError(
                        f'{os.path.abspath(path)}: could not be written ({cause.strerror}: the '
                        'disk is full or the file-size limit reached); nothing was written, '
                        'free some space and run again') from None
                raise

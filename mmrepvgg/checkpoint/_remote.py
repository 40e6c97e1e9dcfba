"""``http(s)://`` checkpoints, downloaded once (bounded in time and size, kept once the reader
accepts them) into ``$MMREPVGG_CACHE`` or ``$XDG_CACHE_HOME/mmrepvgg``: never torch hub's
folder, which mmengine unpickles in full."""
import contextlib
import glob
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from mmengine.dist import barrier, get_dist_info

from .errors import CheckpointError
from ._writing import atomic_output

URL_PREFIXES = ('http://', 'https://')
READ_TIMEOUT_S = 60.0
TOTAL_TIMEOUT_S = 3600.0
MAX_DOWNLOAD_BYTES = 4 * 2**30
_CHUNK_BYTES = 2**20
_EXTENSIONS = ('.pth', '.pt', '.safetensors')
_HASH_PREFIX_MIN_DIGITS = 8


def _cache_dir() -> str:
    root = os.environ.get('MMREPVGG_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'mmrepvgg')
    return os.path.join(root, 'checkpoints')


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]


def _cached_download(url: str) -> str:
    """The cached file of ``url``, or ``''``."""
    found = glob.glob(os.path.join(glob.escape(_cache_dir()), f'{_url_hash(url)}-*'))
    return min(found, default='')


class _RefusedRedirect(Exception):
    """The server redirected off http(s)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, less those leaving http(s): urllib alone follows ``ftp://``."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(URL_PREFIXES):
            raise _RefusedRedirect(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, partial_path: str) -> str:
    """Write ``url``'s bytes to ``partial_path``; return their SHA-256."""
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    digest, received = hashlib.sha256(), 0
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    with opener.open(url, timeout=READ_TIMEOUT_S) as response, \
            open(partial_path, 'wb') as stream:
        content_length, declared = response.headers.get('Content-Length'), -1
        if content_length is not None:
            if not (content_length.strip().isascii() and content_length.strip().isdigit()):
                raise CheckpointError(f'{url}: the server declares a Content-Length of '
                                      f'{content_length[:40]!r}, not a number of bytes; check '
                                      'the URL')
            declared = int(content_length)
            if declared > MAX_DOWNLOAD_BYTES:
                raise CheckpointError(f'{url}: is {declared} bytes, more than the '
                                      f'{MAX_DOWNLOAD_BYTES} bytes a checkpoint may have')
        while True:
            chunk = response.read1(_CHUNK_BYTES)  # what has arrived: the deadline holds
            if not chunk:
                break
            received += len(chunk)
            if received > MAX_DOWNLOAD_BYTES:
                raise CheckpointError(f'{url}: sends more than the {MAX_DOWNLOAD_BYTES} '
                                      'bytes a checkpoint may have; check the URL')
            if time.monotonic() > deadline:
                raise CheckpointError(f'{url}: download took longer than {TOTAL_TIMEOUT_S:g} '
                                      's; run again on a faster connection')
            digest.update(chunk)
            stream.write(chunk)
        if declared >= 0 and received != declared:
            raise http.client.IncompleteRead(b'', declared - received)
    return digest.hexdigest()


def _fetch(url: str, verify: Callable[[str], Any]) -> str:
    folder = _cache_dir()
    file_name = os.path.basename(urllib.parse.urlparse(url).path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f'{url}: cannot be downloaded into {folder} ({error.strerror}); '
                              'point MMREPVGG_CACHE at a writable folder') from None
    # Unique per writer: the next step renames it to the name its content gives.
    incoming = os.path.join(folder, f'.{_url_hash(url)}.{socket.gethostname()}.'
                                    f'{os.getpid()}.incoming')
    try:
        with atomic_output(incoming, overwrite=True) as partial_path:
            content_hash = _download(url, partial_path)
            # torch hub's 'name-<first hex digits of the SHA-256>.pth'
            expected = os.path.splitext(file_name)[0].rpartition('-')[2]
            is_hex = set(expected) <= set('0123456789abcdef')
            if len(expected) >= _HASH_PREFIX_MIN_DIGITS and is_hex \
                    and not content_hash.startswith(expected):
                raise CheckpointError(f'{url}: download is damaged (its SHA-256 starts with '
                                      f'{content_hash[:len(expected)]}, the file name says '
                                      f'{expected}); run again')
            try:
                verify(partial_path)
            except CheckpointError as error:  # named by the URL, not the partial file
                message = str(error).removeprefix(f'{partial_path}: ')
                raise CheckpointError(f'{url}: {message}') from None
        extension = next((end for end in _EXTENSIONS if file_name.endswith(end)), '.pth')
        final = os.path.join(folder, f'{_url_hash(url)}-{content_hash}{extension}')
        os.replace(incoming, final)
        return final
    except _RefusedRedirect as error:
        raise CheckpointError(f'{url}: the server redirects to {str(error)[:200]!r}, which is '
                              'not http(s); pass the http(s) URL of the file') from None
    except urllib.error.HTTPError as error:
        raise CheckpointError(f'{url}: download failed (HTTP {error.code} {error.reason}); '
                              'check the URL') from error
    except urllib.error.URLError as error:
        raise CheckpointError(f'{url}: cannot reach the server ({error.reason}); check the '
                              'URL and the network') from error
    except (socket.timeout, TimeoutError) as error:
        raise CheckpointError(f'{url}: the server sent nothing for {READ_TIMEOUT_S:g} s; '
                              'run again later') from error
    except (http.client.HTTPException, ConnectionError) as error:
        raise CheckpointError(f'{url}: download was interrupted ({type(error).__name__}); '
                              'run again') from error
    finally:
        if os.path.exists(incoming):
            os.unlink(incoming)


def _checkpoint_local_path(source: str, verify: Callable[[str], Any]) -> str:
    """The local file of checkpoint ``source``: a path (``~`` expanded) as it is; a URL
    downloaded on first use (by rank 0) and kept only if ``verify(path)`` accepts it."""
    if not source.startswith(URL_PREFIXES):
        return os.path.expanduser(source)
    rank, world_size = get_dist_info()
    try:
        if rank == 0 and not _cached_download(source):
            _fetch(source, verify)
    finally:  # the other ranks wait for rank 0's download
        if world_size > 1:
            barrier()
    cached = _cached_download(source)
    if not cached:
        raise CheckpointError(f'{source}: rank 0 could not download it; see its error')
    return cached


def _forget_download(path: str) -> None:
    """Remove ``path`` if it is a cached download (one the reader refused)."""
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(_cache_dir()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

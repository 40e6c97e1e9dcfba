"""``http(s)://`` checkpoints: downloaded once into the project's own cache, then read.

The cache is ``$MMREPVGG_CACHE`` or ``$XDG_CACHE_HOME/mmrepvgg`` (``~/.cache/mmrepvgg``),
never torch hub's folder, which mmengine's ``open-mmlab://`` and similar loaders read with
a full unpickler. A download is named by the URL's and the content's SHA-256
(``checkpoints/<url hash>-<content hash>.pth``), not by a name the URL chooses; it has a
connect/read timeout, a total time limit and a size limit, is written atomically (an
interrupted download leaves nothing) and enters the cache only once the reader has read
it, so a refused file (a captive portal's HTML page) never stays there; redirects stay on
http(s), and every error names the URL. Under distributed training rank 0 downloads while
the other ranks wait.
"""
import glob
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional

from mmengine.dist import barrier, get_dist_info

from .errors import CheckpointError
from ._writing import atomic_output

URL_PREFIXES = ('http://', 'https://')
READ_TIMEOUT_S = 60.0
TOTAL_TIMEOUT_S = 3600.0
MAX_DOWNLOAD_BYTES = 4 * 2**30
_CHUNK_BYTES = 2**20
_EXTENSIONS = ('.pth', '.pt', '.safetensors')
# torch hub's convention: 'name-<first hex digits of the SHA-256>.pth'.
_HASH_PREFIX_MIN_DIGITS = 8


def cache_dir() -> str:
    """Where downloaded checkpoints are kept (see the module docstring)."""
    root = os.environ.get('MMREPVGG_CACHE') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'mmrepvgg')
    return os.path.join(root, 'checkpoints')


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]


def _extension(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return next((extension for extension in _EXTENSIONS if name.endswith(extension)), '.pth')


def _hash_prefix(url: str) -> str:
    """The SHA-256 prefix a torch hub file name like ``repvgg-1a2b3c4d.pth`` promises."""
    stem = os.path.splitext(os.path.basename(urllib.parse.urlparse(url).path))[0]
    digits = stem.rpartition('-')[2]
    is_hex = len(digits) >= _HASH_PREFIX_MIN_DIGITS and all(
        character in '0123456789abcdef' for character in digits)
    return digits if is_hex else ''


def cached_download(url: str) -> str:
    """The cached file of ``url``, or ``''`` if it was never downloaded."""
    found = glob.glob(os.path.join(glob.escape(cache_dir()), f'{_url_hash(url)}-*'))
    return sorted(path for path in found if not os.path.basename(path).startswith('.'))[0] \
        if found else ''


class _RefusedRedirect(Exception):
    """The server redirected to a URL that is not http(s) (e.g. ``ftp://``, ``file://``)."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, less those leaving http(s): urllib alone follows ``ftp://``."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.lower().startswith(URL_PREFIXES):
            raise _RefusedRedirect(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _declared_bytes(url: str, content_length: Optional[str]) -> int:
    """The size a ``Content-Length`` header declares, in bytes; -1 if it declares none."""
    if content_length is None:
        return -1
    if not (content_length.strip().isascii() and content_length.strip().isdigit()):
        raise CheckpointError(f'{url}: the server declares a Content-Length of '
                              f'{content_length[:40]!r}, not a number of bytes; check the URL')
    declared = int(content_length)
    if declared > MAX_DOWNLOAD_BYTES:
        raise CheckpointError(f'{url}: is {declared} bytes, more than the '
                              f'{MAX_DOWNLOAD_BYTES} bytes a checkpoint may have')
    return declared


def _download(url: str, partial_path: str) -> str:
    """Write ``url``'s bytes to ``partial_path``; return their SHA-256."""
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    digest, received = hashlib.sha256(), 0
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    with opener.open(url, timeout=READ_TIMEOUT_S) as response, \
            open(partial_path, 'wb') as stream:
        declared = _declared_bytes(url, response.headers.get('Content-Length'))
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


def _make_cache_dir(url: str) -> str:
    folder = cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f'{url}: cannot be downloaded into {folder} ({error.strerror}); '
                              'point MMREPVGG_CACHE at a writable folder') from None
    return folder


def _verified(url: str, partial_path: str, verify: Callable[[str], Any]) -> None:
    """Run ``verify`` on the download at ``partial_path``; its refusal names ``url``."""
    try:
        verify(partial_path)
    except CheckpointError as error:
        message = str(error)
        if message.startswith(f'{partial_path}: '):
            message = message[len(partial_path) + 2:]
        raise CheckpointError(f'{url}: {message}') from None


def _fetch(url: str, verify: Callable[[str], Any]) -> str:
    folder = _make_cache_dir(url)
    # Unique per writer: the next step renames it to the name its content gives.
    incoming = os.path.join(folder, f'.{_url_hash(url)}.{socket.gethostname()}.'
                                    f'{os.getpid()}.incoming')
    try:
        with atomic_output(incoming, overwrite=True) as partial_path:
            content_hash = _download(url, partial_path)
            expected = _hash_prefix(url)
            if expected and not content_hash.startswith(expected):
                raise CheckpointError(f'{url}: download is damaged (its SHA-256 starts with '
                                      f'{content_hash[:len(expected)]}, the file name says '
                                      f'{expected}); run again')
            _verified(url, partial_path, verify)
        final = os.path.join(folder, f'{_url_hash(url)}-{content_hash}{_extension(url)}')
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


def checkpoint_local_path(source: str, verify: Callable[[str], Any]) -> str:
    """The local file holding checkpoint ``source``: a path (``~`` expanded) as it is; an
    ``http(s)://`` URL downloaded on first use (see the module docstring) and kept only if
    ``verify`` (the reader, given the downloaded file's path) accepts it.

    Raises:
        CheckpointError: the download failed (HTTP error, unreachable host, timeout, too
            large, interrupted, hash mismatch, redirect off http(s), refused by ``verify``).
    """
    if not source.startswith(URL_PREFIXES):
        return os.path.expanduser(source)
    rank, world_size = get_dist_info()
    if rank == 0 and not cached_download(source):
        try:
            _fetch(source, verify)
        finally:
            if world_size > 1:
                barrier()
    elif world_size > 1:
        barrier()
    cached = cached_download(source)
    if not cached:
        raise CheckpointError(f'{source}: rank 0 could not download it; see its error')
    return cached


def forget_download(path: str) -> None:
    """Remove ``path`` if it is a cached download (the reader refused it, e.g. a file cached
    before downloads were read on arrival: it must not stay where another load finds it),
    whether the caller gave the URL or the cached file's path."""
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(cache_dir()):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

"""``http(s)://`` checkpoints: downloaded once into torch.hub's cache, then read locally."""
import os
import urllib.error
import urllib.parse

import torch

from .errors import CheckpointError
from .writing import atomic_output

URL_PREFIXES = ('http://', 'https://')


def cached_checkpoint_path(url: str) -> str:
    """Where torch.hub keeps ``url``: ``<torch.hub.get_dir()>/checkpoints/<file name>``."""
    file_name = os.path.basename(urllib.parse.urlparse(url).path)
    if not file_name:
        raise CheckpointError(f'{url}: names no file; pass the URL of the checkpoint file')
    return os.path.join(torch.hub.get_dir(), 'checkpoints', file_name)


def checkpoint_local_path(source: str, progress: bool = True) -> str:
    """The local file holding checkpoint ``source``.

    Args:
        source: a path (``~`` expanded) or an ``http(s)://`` URL. A URL is downloaded on
            first use, with a progress bar on stderr if ``progress``, into
            :func:`cached_checkpoint_path` (atomically: an interrupted download leaves
            nothing), and read from there afterwards. As in torch.hub, a file name like
            ``name-<sha256 prefix>.pth`` is checked against that hash prefix.

    Raises:
        CheckpointError: the download failed (HTTP error, unreachable host, hash mismatch).
    """
    if not source.startswith(URL_PREFIXES):
        return os.path.expanduser(source)
    cached = cached_checkpoint_path(source)
    if os.path.isfile(cached):
        return cached
    hash_match = torch.hub.HASH_REGEX.search(os.path.basename(cached))
    try:
        # overwrite: a concurrent download of the same URL wrote the same bytes.
        with atomic_output(cached, overwrite=True) as partial_path:
            torch.hub.download_url_to_file(source, partial_path,
                                           hash_prefix=hash_match and hash_match.group(1),
                                           progress=progress)
    except urllib.error.HTTPError as error:
        raise CheckpointError(f'{source}: download failed (HTTP {error.code} '
                              f'{error.reason}); check the URL') from error
    except urllib.error.URLError as error:
        raise CheckpointError(f'{source}: cannot reach the server ({error.reason}); check the '
                              'URL and the network') from error
    except RuntimeError as error:  # torch.hub's hash mismatch
        raise CheckpointError(f'{source}: download is damaged ({error}); run again') from error
    return cached

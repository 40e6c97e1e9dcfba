"""mmengine's own checkpoint loading routed through :func:`.reading.load_checkpoint_file`.

mmengine's Runner reads ``load_from``, ``resume`` and ``init_cfg=dict(type='Pretrained')``
through ``mmengine.runner.CheckpointLoader``, whose local and ``http(s)://`` loaders call
``torch.load`` directly. :func:`route_mmengine_loading` replaces those two loaders
(``load_from_local`` for the ``''`` prefix and ``load_from_http`` for ``http://`` and
``https://``); the other schemes (``open-mmlab://``, ``s3://``, ...) are left as they are.
"""
from typing import Any

from mmengine.runner import CheckpointLoader

from .reading import load_checkpoint_file

ROUTED_PREFIXES = ('', 'http://', 'https://')


def load_from_mmrepvgg_safe(filename: str, map_location: Any = None) -> Any:
    """A ``CheckpointLoader`` loader (mmengine logs it as ``mmrepvgg_safe``)."""
    return load_checkpoint_file(filename, map_location='cpu' if map_location is None
                                else map_location)


def route_mmengine_loading() -> None:
    """Register :func:`load_from_mmrepvgg_safe` for :data:`ROUTED_PREFIXES`."""
    CheckpointLoader.register_scheme(prefixes=list(ROUTED_PREFIXES),
                                     loader=load_from_mmrepvgg_safe, force=True)

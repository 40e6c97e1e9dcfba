"""A stand-in for mmcv's compiled ``mmcv._ext``, which mmcv-lite lacks, so that mmseg and mmdet
models import: ``nms`` (``offset=0``) is torchvision's same greedy suppression, every other op
raises :class:`MissingMmcvOpError` when called. With a full mmcv nothing is installed."""
import importlib
import importlib.machinery
import importlib.util
import sys
import types

import torch

EXT_MODULE = 'mmcv._ext'
DEFORMABLE_ATTENTION = 'MultiScaleDeformableAttention'


class MissingMmcvOpError(RuntimeError):
    """A compiled mmcv op was called where only the stand-in is installed."""


def _missing_op(name: str):
    def op(*args, **kwargs):
        raise MissingMmcvOpError(
            f'mmcv op {name!r} needs mmcv\'s compiled extension, which mmcv-lite lacks; '
            'install the full mmcv (pip install mmcv==2.1.0) to use this model')
    op.__name__ = name
    return op


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
         offset: int = 0) -> torch.Tensor:
    """mmcv's ``nms``: indices of the kept ``(x1, y1, x2, y2)`` boxes, by decreasing score."""
    if offset != 0:  # mmcv's legacy "+1" box areas; torchvision has no such mode
        return _missing_op('nms with offset=1')()
    torchvision_ops = importlib.import_module('torchvision.ops')
    return torchvision_ops.nms(boxes.float(), scores.float(), float(iou_threshold))


class _OpsStandIn(types.ModuleType):
    nms = staticmethod(_nms)

    def __getattr__(self, name: str):
        if name.startswith('__'):  # module protocol lookups (__path__, __file__, ...)
            raise AttributeError(name)
        return _missing_op(name)


def install_mmcv_ops_stand_in() -> bool:
    """Make ``import mmcv.ops`` work under mmcv-lite for the rest of the process; returns
    whether the stand-in is in place (False: the real extension is there)."""
    if isinstance(sys.modules.get(EXT_MODULE), _OpsStandIn):
        return True
    if importlib.util.find_spec(EXT_MODULE) is not None:
        return False
    stand_in = _OpsStandIn(EXT_MODULE)
    # No loader: mmengine's mmcv_full_available() asks pkgutil for one, and must say no.
    stand_in.__spec__ = importlib.machinery.ModuleSpec(EXT_MODULE, loader=None)
    sys.modules[EXT_MODULE] = stand_in
    # mmpretrain (so mmrepvgg) imports mmcv's transformer bricks, which try to re-export
    # MultiScaleDeformableAttention from mmcv.ops and go without it when that fails;
    # mmdet imports the name from there. Give the module the name it would have had.
    transformer = sys.modules.get('mmcv.cnn.bricks.transformer')
    if transformer is not None and not hasattr(transformer, DEFORMABLE_ATTENTION):
        deformable = importlib.import_module('mmcv.ops.multi_scale_deform_attn')
        setattr(transformer, DEFORMABLE_ATTENTION, getattr(deformable, DEFORMABLE_ATTENTION))
    return True

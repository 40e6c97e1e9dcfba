"""Imported by the mmseg and mmdet configs (``custom_imports``): under mmcv-lite, installs
the ``mmcv._ext`` stand-in of :mod:`mmrepvgg.dense.mmcv_ops` so that mmseg's and mmdet's
own tools can build their models; with a full mmcv it does nothing."""
from .mmcv_ops import install_mmcv_ops_stand_in

install_mmcv_ops_stand_in()

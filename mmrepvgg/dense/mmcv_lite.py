"""Installs the ``mmcv._ext`` stand-in under mmcv-lite: imported by the mmseg and mmdet configs
(``custom_imports``), or run before tools that import ``mmcv.ops`` before reading the config
(mmdet's ``tools/test.py``): ``python -m mmrepvgg.dense.mmcv_lite TOOL.py ARGS...``."""
import runpy
import sys

from ._mmcv_ops import install_mmcv_ops_stand_in

install_mmcv_ops_stand_in()

if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit('error: name the tool to run, e.g. python -m mmrepvgg.dense.mmcv_lite '
                 'tools/test.py CONFIG CHECKPOINT')
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')

"""RepVGG inside mmsegmentation and mmdetection models; not imported by ``import mmrepvgg``
(mmseg and mmdet are the optional extras ``[seg]`` and ``[det]``)."""

"""RepVGG inside mmsegmentation and mmdetection models: building them from their configs,
fusing and verifying them whole, exporting segmentors to ONNX.

Nothing here is imported by ``import mmrepvgg``; mmseg and mmdet are optional extras
(``pip install .[seg]``, ``.[det]``).
"""

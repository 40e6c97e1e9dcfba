"""ONNX export of an mmseg segmentor with a RepVGG backbone: logits at input resolution."""
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..deploy.onnx_export import DEFAULT_OPSET, OnnxExportError, OnnxExportReport, export_onnx


class SegmentationLogits(nn.Module):
    """An mmseg ``EncoderDecoder`` as ``(N, C, H, W)`` preprocessed images -> ``(N,
    num_classes, H, W)`` logits, resized bilinearly to the input as mmseg post-processes."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, images: Tensor) -> Tensor:
        logits = self.segmentor(images, mode='tensor')
        return F.interpolate(logits, size=images.shape[2:], mode='bilinear',
                             align_corners=self.segmentor.align_corners)


def export_segmentor_onnx(segmentor: nn.Module,
                          path: str,
                          input_shape: Sequence[int] = (1, 3, 512, 512),
                          dynamic_batch: bool = True,
                          opset: int = DEFAULT_OPSET,
                          overwrite: bool = False) -> OnnxExportReport:
    """:func:`~mmrepvgg.deploy.onnx_export.export_onnx` of :class:`SegmentationLogits`;
    ``input_shape`` ``(N, C, H, W)`` fixes H and W (PSPNet's and UPerNet's pooling export only
    where ``H / 8`` divides by each scale). Raises OnnxExportError, ``path`` untouched."""
    try:
        return export_onnx(SegmentationLogits(segmentor), path, input_shape,
                           dynamic_batch=dynamic_batch, opset=opset, overwrite=overwrite)
    # The TorchScript exporter's class (torch 2.1's torch.onnx.OnnxExporterError is dynamo's).
    except torch.onnx.errors.OnnxExporterError as error:
        first_line = str(error).strip().splitlines()[0].split(' Please ')[0]
        raise OnnxExportError(
            f'the segmentor does not export at {input_shape[2]}x{input_shape[3]} '
            f'({first_line}); pass an input size whose feature map divides by every '
            'pool scale, e.g. 384x384 for output stride 8 and scales 1, 2, 3, 6') from error

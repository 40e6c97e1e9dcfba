"""ONNX export of an mmseg segmentor with a RepVGG backbone: logits at input resolution."""
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..deploy.onnx_export import DEFAULT_OPSET, OnnxExportError, OnnxExportReport, export_onnx

SEGMENTOR_SCOPE = 'mmseg'


class SegmentationLogits(nn.Module):
    """An mmseg ``EncoderDecoder`` as an image-to-logits module: ``(N, C, H, W)`` images
    (as its data preprocessor makes them) -> ``(N, num_classes, H, W)`` logits, the decode
    head's resized bilinearly to the input size as mmseg's post-processing does."""

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
    """Export the deploy form of the mmseg ``EncoderDecoder`` ``segmentor`` in
    :class:`SegmentationLogits` through :func:`mmrepvgg.deploy.onnx_export.export_onnx`
    (its arguments); ``input_shape`` ``(N, C, H, W)``: H and W are fixed in the file
    (PSPNet's and UPerNet's pooling export only where ``H / 8`` divides by each scale).

    Raises:
        OnnxExportError: a failed check, or a size the exporter cannot trace; ``path`` is
            untouched.
    """
    try:
        return export_onnx(SegmentationLogits(segmentor), path, input_shape,
                           dynamic_batch=dynamic_batch, opset=opset, overwrite=overwrite)
    # torch.onnx.errors: the TorchScript exporter's (torch.onnx.OnnxExporterError is the other
    # exporter's class in torch 2.1). Nothing was written (atomic output).
    except torch.onnx.errors.OnnxExporterError as error:
        first_line = str(error).strip().splitlines()[0].split(' Please ')[0]
        raise OnnxExportError(
            f'the segmentor does not export at {input_shape[2]}x{input_shape[3]} '
            f'({first_line}); pass an input size whose feature map divides by every '
            'pool scale, e.g. 384x384 for output stride 8 and scales 1, 2, 3, 6') from error

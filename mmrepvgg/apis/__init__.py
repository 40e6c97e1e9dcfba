"""What a user calls: :func:`get_model`, :func:`inference_model` (mmpretrain's names),
:func:`repvgg_convert`, :func:`convert_checkpoint` and :func:`prepare_for_inference`."""
from .convert import ConfigError, ConversionReport, convert_checkpoint, repvgg_convert
from .image_classification import get_model, inference_model
from .inference import prepare_for_inference

__all__ = ['get_model', 'inference_model', 'repvgg_convert', 'convert_checkpoint',
           'ConversionReport', 'prepare_for_inference', 'ConfigError']

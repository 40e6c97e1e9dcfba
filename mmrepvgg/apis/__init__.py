"""What a user calls. Public: :func:`get_model` and :func:`inference_model` (mmpretrain's
names), :func:`repvgg_convert` (a model) and :func:`convert_checkpoint` (a file, verified;
its :class:`ConversionReport`), :func:`prepare_for_inference`, and :class:`ConfigError`.
The tools' helpers live in :mod:`.convert` and :mod:`.image_classification`.
"""
from .convert import ConfigError, ConversionReport, convert_checkpoint, repvgg_convert
from .image_classification import get_model, inference_model
from .inference import prepare_for_inference

__all__ = ['get_model', 'inference_model', 'repvgg_convert', 'convert_checkpoint',
           'ConversionReport', 'prepare_for_inference', 'ConfigError']

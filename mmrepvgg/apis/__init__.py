"""What a user calls. Public: :func:`get_model` and :func:`inference_model` (mmpretrain's
names), :func:`repvgg_convert` (a model) and :func:`convert_checkpoint` (a file, verified;
its :class:`ConversionReport`), :func:`prepare_for_inference`, and :class:`ConfigError`.
The other names imported here serve the tools.
"""
from .convert import (ConfigError, ConversionReport, build_train_model, convert_checkpoint,
                      load_repvgg_checkpoint, load_repvgg_weights, repvgg_convert,
                      verify_fusion)
from .image_classification import get_model, inference_model, list_images
from .inference import prepare_for_inference

__all__ = ['get_model', 'inference_model', 'repvgg_convert', 'convert_checkpoint',
           'ConversionReport', 'prepare_for_inference', 'ConfigError']

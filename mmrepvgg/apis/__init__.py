from .convert import (ConfigError, ConversionReport, build_train_model, convert_checkpoint,
                      load_repvgg_checkpoint, load_repvgg_weights, repvgg_convert,
                      verify_fusion)
from .image_classification import get_model, inference_model, list_images
from .inference import (INFERENCE_BACKENDS, InferenceModel, OnnxRuntimeInferenceModel,
                        prepare_for_inference)

__all__ = ['ConfigError', 'ConversionReport', 'build_train_model', 'convert_checkpoint',
           'load_repvgg_checkpoint', 'load_repvgg_weights', 'repvgg_convert', 'verify_fusion',
           'INFERENCE_BACKENDS', 'InferenceModel', 'OnnxRuntimeInferenceModel',
           'prepare_for_inference',
           'get_model', 'inference_model', 'list_images']

from .convert import (ConfigError, ConversionReport, build_train_model, convert_checkpoint,
                      load_repvgg_weights, repvgg_convert)

__all__ = ['ConfigError', 'ConversionReport', 'build_train_model', 'convert_checkpoint',
           'load_repvgg_weights', 'repvgg_convert']

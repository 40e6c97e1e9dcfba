"""mmrepvgg: RepVGG for mmpretrain / mmengine, with exact structural re-parameterization. The
public API is :data:`__all__` (docs/api.md); importing only registers the scope, its modules
and the model zoo; the exporters (the ``onnx`` extra) are imported on first use."""
import importlib
import warnings

from ._utils import global_rngs_kept

# Restores the process's warnings filters and random generators (rich, imported through
# mmengine, draws from Python's) on exit.
with warnings.catch_warnings(), global_rngs_kept():
    # mmcv-lite has no compiled ops; mmpretrain's import warns about one never used here.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')
    from .version import __version__
    from .apis import (convert_checkpoint, get_model, inference_model, prepare_for_inference,
                       repvgg_convert)
    from .checkpoint import CheckpointError, load_checkpoint
    from ._config_file import ConfigError
    from .model_zoo import list_models
    from .models import QARepVGGBlock, RepVGG, RepVGGBlock, reparameterize_model

__all__ = ['__version__', 'get_model', 'list_models', 'inference_model', 'reparameterize_model',
           'repvgg_convert', 'convert_checkpoint', 'load_checkpoint', 'prepare_for_inference',
           'export_onnx', 'export_int8', 'RepVGG', 'RepVGGBlock', 'QARepVGGBlock',
           'CheckpointError', 'ConfigError']

# Public names whose module needs an optional extra: imported when first asked for.
_LAZY_EXPORTS = {'export_onnx': 'mmrepvgg.deploy.onnx_export',
                 'export_int8': 'mmrepvgg.deploy.quantization'}


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))

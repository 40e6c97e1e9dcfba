"""mmrepvgg: RepVGG for mmpretrain / mmengine, with exact structural re-parameterization.

Importing the package registers the ``mmrepvgg`` scope (see :mod:`mmrepvgg.registry`) and
allow-lists the globals of mmengine checkpoints for ``torch.load(weights_only=True)``.
"""
import warnings

# mmcv-lite has no compiled ops; mmpretrain's imports warn about one we never use.
warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')

from .checkpoint import allow_mmengine_checkpoint_globals  # noqa: E402
from .version import __version__  # noqa: E402
from . import models  # noqa: E402,F401  (registers RepVGG)
from .apis import repvgg_convert  # noqa: E402
from .model_zoo import register_model_zoo  # noqa: E402

allow_mmengine_checkpoint_globals()

__all__ = ['__version__', 'repvgg_convert']

# So that mmpretrain's list_models('repvgg*') and get_model(name) find the published zoo.
register_model_zoo()

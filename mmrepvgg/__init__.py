"""mmrepvgg: RepVGG for mmpretrain / mmengine, with exact structural re-parameterization.

Importing the package registers the ``mmrepvgg`` scope (see :mod:`mmrepvgg.registry`) and
routes mmengine's local and http(s) checkpoint loading through the safe reader
(:mod:`mmrepvgg.checkpoint.mmengine_loading`); torch's own allow-list is left untouched.
"""
import warnings

# mmcv-lite has no compiled ops; mmpretrain's imports warn about one we never use.
warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')

from .checkpoint import route_mmengine_loading  # noqa: E402
from .version import __version__  # noqa: E402
from . import models  # noqa: E402,F401  (registers RepVGG)
from .apis import repvgg_convert  # noqa: E402
from .model_zoo import register_model_zoo  # noqa: E402

route_mmengine_loading()

__all__ = ['__version__', 'repvgg_convert']

# So that mmpretrain's list_models('repvgg*') and get_model(name) find the published zoo.
register_model_zoo()

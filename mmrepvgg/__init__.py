"""mmrepvgg: RepVGG for mmpretrain / mmengine, with exact structural re-parameterization.

Importing the package only registers: the ``mmrepvgg`` scope and its modules (see
:mod:`mmrepvgg.registry`) and the published model zoo with mmpretrain's ``ModelHub``.
torch's allow-list, mmengine's checkpoint loaders, warnings filters and loggers stay as
they were; the project's own loads go through :mod:`mmrepvgg.checkpoint.reader`.
"""
import warnings

from .utils import global_rngs_kept

# Restores the process's warnings filters and random generators (rich, imported through
# mmengine, draws from Python's) on exit.
with warnings.catch_warnings(), global_rngs_kept():
    # mmcv-lite has no compiled ops; mmpretrain's import warns about one never used here.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')
    from .version import __version__
    from . import models  # noqa: F401  (registers RepVGG)
    from .apis import repvgg_convert
    from .model_zoo import register_model_zoo

__all__ = ['__version__', 'repvgg_convert']

# So that mmpretrain's list_models('repvgg*') and get_model(name) find the published zoo.
register_model_zoo()

"""Registries of the ``mmrepvgg`` scope, children of mmpretrain's: a ``type`` is looked up here,
then in mmpretrain and mmengine. mmengine imports this module when it switches to the scope."""
from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain_registry

SCOPE = 'mmrepvgg'


def _child_of(parent: Registry, *locations: str) -> Registry:
    # mmengine imports only the queried registry's own locations before a lookup, not its
    # parents'; inheriting them makes mmpretrain register e.g. UniversalVisualizer in time.
    registry = Registry(parent.name, parent=parent, scope=SCOPE,
                        locations=[*parent._locations, *locations])
    # A second link, from the root: mmengine resolves a scoped ``'mmrepvgg.<name>'`` met in
    # another project's registry (mmseg's, mmdet's) among the root's children only.
    # Unscoped lookups still climb the parent link alone.
    parent._get_root_registry().children[SCOPE] = registry
    return registry


# The locations register RepVGGRunner and RepVGGCheckpointGuard whenever a config names
# them, also in another project's tool (custom_imports).
RUNNERS = _child_of(mmpretrain_registry.RUNNERS, 'mmrepvgg.engine')
RUNNER_CONSTRUCTORS = _child_of(mmpretrain_registry.RUNNER_CONSTRUCTORS)
LOOPS = _child_of(mmpretrain_registry.LOOPS)
HOOKS = _child_of(mmpretrain_registry.HOOKS, 'mmrepvgg.engine')
LOG_PROCESSORS = _child_of(mmpretrain_registry.LOG_PROCESSORS)
OPTIMIZERS = _child_of(mmpretrain_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _child_of(mmpretrain_registry.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child_of(mmpretrain_registry.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child_of(mmpretrain_registry.PARAM_SCHEDULERS)
DATASETS = _child_of(mmpretrain_registry.DATASETS)
DATA_SAMPLERS = _child_of(mmpretrain_registry.DATA_SAMPLERS)
TRANSFORMS = _child_of(mmpretrain_registry.TRANSFORMS)
MODELS = _child_of(mmpretrain_registry.MODELS, 'mmrepvgg.models')
MODEL_WRAPPERS = _child_of(mmpretrain_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child_of(mmpretrain_registry.WEIGHT_INITIALIZERS)
BATCH_AUGMENTS = _child_of(mmpretrain_registry.BATCH_AUGMENTS)
TASK_UTILS = _child_of(mmpretrain_registry.TASK_UTILS)
TOKENIZER = _child_of(mmpretrain_registry.TOKENIZER)
METRICS = _child_of(mmpretrain_registry.METRICS)
EVALUATORS = _child_of(mmpretrain_registry.EVALUATORS)
VISUALIZERS = _child_of(mmpretrain_registry.VISUALIZERS)
VISBACKENDS = _child_of(mmpretrain_registry.VISBACKENDS)

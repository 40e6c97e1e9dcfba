# Build types in the 'mmrepvgg' scope first: 'RepVGG' is this project's backbone, the rest
# (ImageClassifier, ImageNet, Mixup, ...) falls through to mmpretrain and mmengine.
default_scope = 'mmrepvgg'
custom_imports = dict(imports=['mmrepvgg'], allow_failed_imports=False)
# mmpretrain's own tools/train.py and test.py (and mim train) build this Runner too: it reads
# checkpoints with the project's reader, never runs a checkpoint's stored config and fits
# load_from exactly (docs/trust_in_other_tools.md).
runner_type = 'mmrepvgg.RepVGGRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches to gloo when no GPU is available.
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)

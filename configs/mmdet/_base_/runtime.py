# mmdet's runtime defaults (its _base_/default_runtime.py settings), with this project
# imported: mmrepvgg registers RepVGG; mmrepvgg.dense.mmcv_lite lets mmdet's models import
# under mmcv-lite (a no-op with a full mmcv, see docs/dense_prediction.md).
default_scope = 'mmdet'
custom_imports = dict(imports=['mmrepvgg', 'mmrepvgg.dense.mmcv_lite'],
                      allow_failed_imports=False)
# mmdet's own tools/train.py and test.py build this Runner too: it reads checkpoints with
# the project's reader, never runs a checkpoint's stored config and fits load_from exactly
# (docs/trust_in_other_tools.md).
runner_type = 'mmrepvgg.RepVGGRunner'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
# Unnamed (mmengine names it after the run), unlike the upstream runtime's name='visualizer',
# which every later Runner of a process shares, writing into the first run's folder.
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False

# mmseg's runtime defaults (its _base_/default_runtime.py settings), with this project
# imported: mmrepvgg registers RepVGG; mmrepvgg.dense.mmcv_lite lets mmseg's models import
# under mmcv-lite (a no-op with a full mmcv, see docs/dense_prediction.md).
default_scope = 'mmseg'
custom_imports = dict(imports=['mmrepvgg', 'mmrepvgg.dense.mmcv_lite'],
                      allow_failed_imports=False)
# mmseg's own tools/train.py builds this Runner too: it reads checkpoints with the
# project's reader, never runs a checkpoint's stored config and fits load_from exactly.
# mmseg's tools/test.py builds mmengine's Runner whatever runner_type says; the guard hook
# loads load_from there as this Runner would (docs/trust_in_other_tools.md).
runner_type = 'mmrepvgg.RepVGGRunner'
custom_hooks = [dict(type='mmrepvgg.RepVGGCheckpointGuard')]
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
# Unnamed (mmengine names it after the run), unlike the upstream runtime's name='visualizer',
# which every later Runner of a process shares, writing into the first run's folder.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

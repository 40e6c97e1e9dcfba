# Fine-tune the published ImageNet RepVGG-A0 on your own images, one folder per class:
#   data/custom/train/<class name>/*.jpg   data/custom/val/<class name>/*.jpg
# (mmpretrain's CustomDataset; the class names are the sorted folder names). Set
# num_classes below to your number of classes; see docs/finetune.md.
_base_ = [
    '../_base_/models/repvgg-A0_in1k.py',
    '../_base_/default_runtime.py',
]

num_classes = 2  # the number of class folders in train/
data_root = 'data/custom'

model = dict(
    backbone=dict(init_cfg=dict(
        # The project's reader and exact fitting (mmengine's 'Pretrained' loads non-strictly).
        type='mmrepvgg.Pretrained',
        # The published train-form A0 (model zoo: repvgg-A0_3rdparty_4xb64-coslr-120e_in1k);
        # only its backbone is used, the head starts afresh for the new classes.
        checkpoint='https://download.openmmlab.com/mmclassification/v0/repvgg/'
        'repvgg-A0_3rdparty_4xb64-coslr-120e_in1k_20210909-883ab98c.pth')),
    head=dict(num_classes=num_classes, topk=(1, )),
)

dataset_type = 'CustomDataset'
# ImageNet statistics on 0-255, as the published weights were trained with.
data_preprocessor = dict(
    num_classes=num_classes,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    # A last batch of one image would make BatchNorm fail in training.
    drop_last=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# The published lr (0.1 at batch 256) scaled linearly to batch 32; one warm-up epoch so the
# new head's first large gradients do not wreck the pretrained backbone; cosine to 0.
max_epochs = 30
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.0125, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, by_epoch=True, begin=1,
         end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=32)

default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))

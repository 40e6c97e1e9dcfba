# The offline detection example (docs/dense_prediction.md): FCOS on RepVGG-A0 + FPN of
# ../fcos_repvgg-A0_fpn_gn-head_1x_coco.py, trained from scratch on handwritten digits
# pasted onto 64x64 canvases (mmrepvgg.datasets.prepare_digit_canvases, written by
# tools/dense_demo.py): a box per digit, 10 classes. Sized for a few minutes on a CPU:
# three FPN levels (1/8, 1/16, 1/32) of 64 channels, a 2-conv head, 64x64 inputs.
_base_ = '../fcos_repvgg-A0_fpn_gn-head_1x_coco.py'

data_root = 'data/digit_canvases/'
model = dict(
    # Mean and std of the train canvases' pixels (0-255; grey, loaded as 3 channels).
    data_preprocessor=dict(mean=[15.56, 15.56, 15.56], std=[48.39, 48.39, 48.39]),
    backbone=dict(frozen_stages=-1, init_cfg=[
        dict(type='Kaiming', layer=['Conv2d']),
        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
    ]),
    neck=dict(out_channels=64, num_outs=3),
    bbox_head=dict(num_classes=10, in_channels=64, feat_channels=64, stacked_convs=2,
                   strides=[8, 16, 32], regress_ranges=((-1, 16), (16, 32), (32, 1e8)),
                   norm_cfg=dict(type='GN', num_groups=16, requires_grad=True)),
    test_cfg=dict(score_thr=0.05, max_per_img=10))

metainfo = dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9'))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),  # records scale_factor 1
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    _delete_=True, batch_size=8, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train.json', data_prefix=dict(img='images/train/'),
                 pipeline=pipeline))
val_dataloader = dict(
    _delete_=True, batch_size=8, num_workers=0, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/val.json', data_prefix=dict(img='images/val/'),
                 test_mode=True, pipeline=pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs),
]
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1),
                     visualization=dict(draw=False))
randomness = dict(seed=0)

# The offline segmentation example (docs/dense_prediction.md): FCN on the dilated
# RepVGG-A0 of ../fcn_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py, trained from scratch on
# handwritten digits pasted onto 64x64 canvases (mmrepvgg.datasets.prepare_digit_canvases,
# written by tools/dense_demo.py): 11 classes, background and one per digit. Sized for a
# few minutes on a CPU: plain BN, a 64-channel head, no auxiliary head, 64x64 inputs.
_base_ = '../fcn_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py'

data_root = 'data/digit_canvases'
num_classes = 11
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    # Mean and std of the train canvases' pixels (0-255; grey, loaded as 3 channels).
    data_preprocessor=dict(mean=[15.56, 15.56, 15.56], std=[48.39, 48.39, 48.39],
                           size=(64, 64)),
    backbone=dict(norm_cfg=norm_cfg, init_cfg=[
        dict(type='Kaiming', layer=['Conv2d']),
        dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm']),
    ]),
    # Background is 91 % of the train pixels; at weight 1 the head learnt to predict only
    # background in 600 iterations (mIoU 8.3 %, measured), at 0.1 it learns the digits.
    decode_head=dict(channels=64, num_classes=num_classes, norm_cfg=norm_cfg,
                     dropout_ratio=0.0,
                     loss_decode=dict(class_weight=[0.1] + [1.0] * 10)),
    auxiliary_head=None)

dataset = dict(type='BaseSegDataset', data_root=data_root, img_suffix='.png',
               seg_map_suffix='.png', metainfo=dict(classes=(
                   'background', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9')))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    _delete_=True, batch_size=8, num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/train', seg_map_path='masks/train')))
val_dataloader = dict(
    _delete_=True, batch_size=8, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, pipeline=train_pipeline, test_mode=True,
                 data_prefix=dict(img_path='images/val', seg_map_path='masks/val')))
test_dataloader = val_dataloader

max_iters = 400
optim_wrapper = dict(optimizer=dict(lr=0.05))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
                        by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=1),
                     visualization=dict(draw=False))
randomness = dict(seed=0)

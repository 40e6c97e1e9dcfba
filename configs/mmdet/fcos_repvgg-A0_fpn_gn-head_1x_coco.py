# FCOS (Tian et al., ICCV 2019) on RepVGG-A0 + FPN, COCO, 1x schedule: the recipe of
# mmdet's fcos_r50-caffe_fpn_gn-head_1x_coco (FPN from stage 2, extra levels from its
# output after a ReLU; GroupNorm head; focal, IoU and centre-ness losses; lr 0.01 with
# doubled bias lr and no bias decay; warm-up from 1/3) with RepVGG in place of the
# ResNet-50 and ImageNet RGB statistics instead of caffe's.
_base_ = './_base_/repvgg-A0_coco_1x.py'

model = dict(
    type='FCOS',
    neck=dict(type='FPN', in_channels=[48, 96, 192, 1280], out_channels=256, start_level=1,
              add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead', num_classes=80, in_channels=256, stacked_convs=4,
        feat_channels=256, strides=[8, 16, 32, 64, 128],
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
optim_wrapper = dict(paramwise_cfg=dict(bias_lr_mult=2., bias_decay_mult=0.))
param_scheduler = [
    dict(type='ConstantLR', factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end={{_base_.max_epochs}}, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]

# An EncoderDecoder on a dilated RepVGG-A0, output stride 8: the stem and the first blocks
# of stages 1 and 2 keep stride 2 (1/8), stages 3 and 4 run at stride 1 with dilations 2
# and 4, as the official RepVGG repository's PSPNet example does (and mmseg's ResNet-D8).
# Stages 1-4 give int(64 * 2**i * width_factor[i]) = 48, 96, 192, 1280 channels.
# ImageNet statistics (RGB, 0-255), as the published weights were trained with. The
# auxiliary FCN head on stage 3 is mmseg's (loss weight 0.4); each config adds its decode
# head.
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255),
    backbone=dict(
        type='mmrepvgg.RepVGG',
        arch='A0',
        out_indices=(0, 1, 2, 3),
        strides=(2, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        # The published train-form RepVGG-A0 (model zoo:
        # repvgg-A0_3rdparty_4xb64-coslr-120e_in1k, ImageNet top-1 72.41 %).
        # The project's reader and exact fitting of the backbone (mmengine's 'Pretrained'
        # loads whatever keys match); the classifier's head is skipped and named.
        init_cfg=dict(type='mmrepvgg.Pretrained',
                      checkpoint='https://download.openmmlab.com/mmclassification/v0/'
                      'repvgg/repvgg-A0_3rdparty_4xb64-coslr-120e_in1k_20210909-883ab98c.pth')),
    auxiliary_head=dict(
        type='FCNHead', in_channels=192, in_index=2, channels=256, num_convs=1,
        concat_input=False, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

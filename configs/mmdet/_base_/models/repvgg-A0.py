# A detector's RepVGG-A0 backbone: all four stages (1/4 to 1/32; 48, 96, 192, 1280
# channels), BN statistics updated while training (mmdet's ResNets freeze them; RepVGG's
# fusion reads them, so they stay those of this data), ImageNet statistics (RGB, 0-255)
# as the published weights were trained with. Each config adds its neck and head.
model = dict(
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                           pad_size_divisor=32),
    backbone=dict(
        type='mmrepvgg.RepVGG',
        arch='A0',
        out_indices=(0, 1, 2, 3),
        frozen_stages=0,  # the stem, as mmdet's ResNets freeze theirs
        norm_cfg=dict(type='BN', requires_grad=True),
        # The published train-form RepVGG-A0 (model zoo:
        # repvgg-A0_3rdparty_4xb64-coslr-120e_in1k, ImageNet top-1 72.41 %).
        # The project's reader and exact fitting of the backbone (mmengine's 'Pretrained'
        # loads whatever keys match); the classifier's head is skipped and named.
        init_cfg=dict(type='mmrepvgg.Pretrained',
                      checkpoint='https://download.openmmlab.com/mmclassification/v0/'
                      'repvgg/repvgg-A0_3rdparty_4xb64-coslr-120e_in1k_20210909-883ab98c.pth')))

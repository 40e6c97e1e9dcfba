# UPerNet (Xiao et al., ECCV 2018) on a dilated RepVGG-A0, ADE20K 512x512, 80k iterations:
# the recipe of mmseg's upernet_r50_4xb4-80k_ade20k-512x512 (pyramid pooling 1, 2, 3, 6 and
# an FPN over all four stages, 512 channels) with RepVGG in place of the ResNet-50. mmseg's
# UPerNet backbone is undilated (1/4 to 1/32); here, as in the other configs of this
# folder, the stages give 1/4, 1/8, 1/8, 1/8 (output stride 8).
_base_ = './_base_/repvgg-A0-d8_ade20k-512x512_80k.py'

model = dict(
    decode_head=dict(
        type='UPerHead', in_channels=[48, 96, 192, 1280], in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=150,
        norm_cfg={{_base_.norm_cfg}}, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))

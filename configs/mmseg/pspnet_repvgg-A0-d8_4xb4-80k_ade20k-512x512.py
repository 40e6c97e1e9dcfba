# PSPNet (Zhao et al., CVPR 2017) on a dilated RepVGG-A0 (output stride 8), ADE20K 512x512,
# 80k iterations: the recipe of mmseg's pspnet_r50-d8_4xb4-80k_ade20k-512x512 (pyramid
# pooling over 1, 2, 3, 6 bins, 512 channels) with RepVGG in place of the ResNet-50; the
# official RepVGG repository's segmentation example is this head on dilated stages 3-4.
_base_ = './_base_/repvgg-A0-d8_ade20k-512x512_80k.py'

model = dict(
    decode_head=dict(
        type='PSPHead', in_channels=1280, in_index=3, channels=512,
        pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, num_classes=150,
        norm_cfg={{_base_.norm_cfg}}, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))

# FCN (Long et al., CVPR 2015) on a dilated RepVGG-A0 (output stride 8), ADE20K 512x512,
# 80k iterations: the recipe of mmseg's fcn_r50-d8_4xb4-80k_ade20k-512x512 (two 3x3 convs
# of 512 channels, input concatenated) with RepVGG in place of the ResNet-50.
_base_ = './_base_/repvgg-A0-d8_ade20k-512x512_80k.py'

model = dict(
    decode_head=dict(
        type='FCNHead', in_channels=1280, in_index=3, channels=512,
        num_convs=2, concat_input=True, dropout_ratio=0.1, num_classes=150,
        norm_cfg={{_base_.norm_cfg}}, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))

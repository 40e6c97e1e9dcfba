# pspnet_repvgg-A0-d8 with RepVGG-B1 (widths 2 and 4: stages of 128, 256, 512, 2048
# channels); ImageNet weights: the published train-form B1 (model zoo:
# repvgg-B1_3rdparty_4xb64-coslr-120e_in1k, top-1 78.37 %).
_base_ = './pspnet_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='B1',
        init_cfg=dict(checkpoint='https://download.openmmlab.com/mmclassification/v0/'
                      'repvgg/repvgg-B1_3rdparty_4xb64-coslr-120e_in1k_20210909-750cdf67.pth')),
    decode_head=dict(in_channels=2048),
    auxiliary_head=dict(in_channels=512))

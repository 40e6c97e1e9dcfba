# The changes from RepVGG-A0 to B1 in the configs of this folder: widths 2 and 4 (stages
# of 128, 256, 512, 2048 channels) and the published train-form B1 (model zoo:
# repvgg-B1_3rdparty_4xb64-coslr-120e_in1k, ImageNet top-1 78.37 %).
repvgg_b1_backbone = dict(
    arch='B1',
    init_cfg=dict(checkpoint='https://download.openmmlab.com/mmclassification/v0/repvgg/'
                  'repvgg-B1_3rdparty_4xb64-coslr-120e_in1k_20210909-750cdf67.pth'))
repvgg_b1_auxiliary_head = dict(in_channels=512)

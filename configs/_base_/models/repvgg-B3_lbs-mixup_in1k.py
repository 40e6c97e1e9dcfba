_base_ = './repvgg-A0_in1k.py'

model = dict(
    backbone=dict(arch='B3'),
    head=dict(
        in_channels=2560,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='classy_vision',
                  num_classes=1000)),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)),
)

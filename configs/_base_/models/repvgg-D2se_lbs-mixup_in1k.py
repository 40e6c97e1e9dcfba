# Same stage-4 width (2560), label smoothing and Mixup as B3.
_base_ = './repvgg-B3_lbs-mixup_in1k.py'

model = dict(backbone=dict(arch='D2se'))

_base_ = './repvgg-A0_in1k.py'

model = dict(backbone=dict(arch='A1'), head=dict(in_channels=1280))

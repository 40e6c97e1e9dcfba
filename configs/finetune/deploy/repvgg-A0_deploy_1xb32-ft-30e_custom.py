_base_ = '../repvgg-A0_1xb32-ft-30e_custom.py'

model = dict(backbone=dict(deploy=True))

_base_ = '../repvgg-A0_digits.py'

model = dict(backbone=dict(deploy=True))

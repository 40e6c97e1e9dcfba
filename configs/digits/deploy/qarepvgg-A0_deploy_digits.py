_base_ = '../qarepvgg-A0_digits.py'

model = dict(backbone=dict(deploy=True))

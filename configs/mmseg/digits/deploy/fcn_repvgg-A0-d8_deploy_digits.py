# The deploy form of ../fcn_repvgg-A0-d8_digits.py (tools/dense_demo.py tests it).
_base_ = '../fcn_repvgg-A0-d8_digits.py'

model = dict(backbone=dict(deploy=True))

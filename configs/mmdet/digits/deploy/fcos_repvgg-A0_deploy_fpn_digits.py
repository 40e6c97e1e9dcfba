# The deploy form of ../fcos_repvgg-A0_fpn_digits.py (tools/dense_demo.py tests it).
_base_ = '../fcos_repvgg-A0_fpn_digits.py'

model = dict(backbone=dict(deploy=True))

# QARepVGG-A0 (Chu et al., AAAI 2024) on the digits, trained by the same recipe as
# RepVGG-A0 so that FP32 and INT8 accuracies of the two blocks compare directly.
_base_ = './repvgg-A0_digits.py'

model = dict(backbone=dict(block_type='qarepvgg'))

# QARepVGG-A0 (Chu et al., AAAI 2024) on the digits: RepVGG-A0's digits recipe except the
# learning rate. Measured (one run each, seed 0, 6 epochs, val top-1): RepVGG-A0 at lr 0.05
# 95.6 %; QARepVGG-A0 at lr 0.05 75.0 % (unstable: 8.9 / 31.9 / 10.0 / 60.6 % after epochs
# 1-4), at lr 0.01 96.7 %. Its 1x1 and identity branches add unnormalised, so the step
# size of batch 32 at 0.05 (0.4 at ImageNet's batch 256) is too large for it.
_base_ = './repvgg-A0_digits.py'

model = dict(backbone=dict(block_type='qarepvgg'))
optim_wrapper = dict(optimizer=dict(lr=0.01))

# QARepVGG-D2se (Chu et al., "Make RepVGG Greater Again", AAAI 2024): RepVGG-D2se's
# architecture and recipe with the quantization-friendly block.
_base_ = '../repvgg-D2se_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py'

model = dict(backbone=dict(block_type='qarepvgg'))

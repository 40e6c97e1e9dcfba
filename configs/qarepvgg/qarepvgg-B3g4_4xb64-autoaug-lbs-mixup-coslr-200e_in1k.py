# QARepVGG-B3g4 (Chu et al., "Make RepVGG Greater Again", AAAI 2024): RepVGG-B3g4's
# architecture and recipe with the quantization-friendly block.
_base_ = '../repvgg-B3g4_4xb64-autoaug-lbs-mixup-coslr-200e_in1k.py'

model = dict(backbone=dict(block_type='qarepvgg'))

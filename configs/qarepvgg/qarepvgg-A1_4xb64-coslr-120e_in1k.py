# QARepVGG-A1 (Chu et al., "Make RepVGG Greater Again", AAAI 2024): RepVGG-A1's
# architecture and recipe with the quantization-friendly block.
_base_ = '../repvgg-A1_4xb64-coslr-120e_in1k.py'

model = dict(backbone=dict(block_type='qarepvgg'))

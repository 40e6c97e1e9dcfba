# QARepVGG-B1g2 (Chu et al., "Make RepVGG Greater Again", AAAI 2024): RepVGG-B1g2's
# architecture and recipe with the quantization-friendly block.
_base_ = '../repvgg-B1g2_4xb64-coslr-120e_in1k.py'

model = dict(backbone=dict(block_type='qarepvgg'))

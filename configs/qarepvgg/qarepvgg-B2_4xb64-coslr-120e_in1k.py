# QARepVGG-B2 (Chu et al., "Make RepVGG Greater Again", AAAI 2024): RepVGG-B2's
# architecture and recipe with the quantization-friendly block.
_base_ = '../repvgg-B2_4xb64-coslr-120e_in1k.py'

model = dict(backbone=dict(block_type='qarepvgg'))

# QARepVGG-A0 (Chu et al., "Make RepVGG Greater Again", AAAI 2024): RepVGG-A0's
# architecture and recipe with the quantization-friendly block.
# Published: ImageNet top-1 72.2 % FP32, 70.4 % after standard INT8 post-training
# quantization (RepVGG-A0: 72.4 % -> 52.2 %).
_base_ = '../repvgg-A0_4xb64-coslr-120e_in1k.py'

model = dict(backbone=dict(block_type='qarepvgg'))

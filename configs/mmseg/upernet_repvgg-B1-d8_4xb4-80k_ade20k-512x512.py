# upernet_repvgg-A0-d8 with RepVGG-B1 (see _base_/models/repvgg-B1-d8.py).
_base_ = [
    './upernet_repvgg-A0-d8_4xb4-80k_ade20k-512x512.py',
    './_base_/models/repvgg-B1-d8.py',
]
model = dict(backbone={{_base_.repvgg_b1_backbone}},
             decode_head=dict(in_channels=[128, 256, 512, 2048]),
             auxiliary_head={{_base_.repvgg_b1_auxiliary_head}})

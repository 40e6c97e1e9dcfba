# What every ADE20K config of this folder shares: the dilated RepVGG-A0 EncoderDecoder,
# ADE20K 512x512, mmseg's 80k schedule and runtime; each config adds its decode head.
_base_ = [
    './models/repvgg-A0-d8.py',
    './datasets/ade20k_512x512.py',
    './schedules/sgd-poly_80k.py',
    './runtime.py',
]
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}))

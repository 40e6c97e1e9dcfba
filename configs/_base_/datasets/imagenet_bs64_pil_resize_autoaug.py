# The ImageNet pipeline of imagenet_bs64_pil_resize.py plus AutoAugment's ImageNet policy.
_base_ = './imagenet_bs64_pil_resize.py'

# AutoAugment fills uncovered pixels with the mean colour, in the BGR order images load in.
bgr_mean = [103.53, 116.28, 123.675]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='AutoAugment', policies='imagenet', hparams=dict(pad_val=bgr_mean)),
    dict(type='PackInputs'),
]

train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

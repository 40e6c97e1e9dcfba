# RepVGG-A0 on the photos data set (no download): 12 classes, one per photo shipped inside
# scikit-image, scikit-learn and matplotlib; 2,880 train / 960 val 64x64 crops, the val
# crops from a region of each photo no train crop shows, under data/photos, written by
# benchmarks/lab/photos.py; read at 32x32. The digits recipe, with random resized
# crops and flips for 18 epochs: measured, A0 top-1 65.10 % -> 68.65 % and QARepVGG-A0
# 63.96 % -> 70.21 % against 6 epochs without them (which fit the train crops: 97 %).
_base_ = '../../../configs/digits/repvgg-A0_digits.py'

num_classes = 12
data_root = 'data/photos'
model = dict(head=dict(num_classes=num_classes))

data_preprocessor = dict(
    num_classes=num_classes,
    mean=[114.01, 85.47, 76.09],  # RGB mean of the train crops on 0-255
    std=[84.97, 67.69, 66.53],  # RGB std of the train crops on 0-255
    to_rgb=True,  # LoadImageFromFile reads BGR
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.35, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=32, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]

train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 18
param_scheduler = dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
                       end=max_epochs, _delete_=True)
train_cfg = dict(max_epochs=max_epochs)

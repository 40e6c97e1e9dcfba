# RepVGG-A0 on the photos data set (no download): 12 classes, one per photo shipped inside
# scikit-image, scikit-learn and matplotlib; 2,880 train / 960 val 64x64 crops, the val
# crops from a region of each photo no train crop shows, under data/photos, written by
# mmrepvgg.datasets.prepare_photos; read at 32x32. The digits recipe otherwise.
_base_ = '../digits/repvgg-A0_digits.py'

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
    dict(type='Resize', scale=32, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
test_pipeline = train_pipeline

train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# What every COCO config of this folder shares: the RepVGG-A0 backbone, COCO detection,
# mmdet's 1x schedule and runtime; each config adds its detector, neck and head.
_base_ = [
    './models/repvgg-A0.py',
    './datasets/coco_detection.py',
    './schedules/sgd_1x.py',
    './runtime.py',
]

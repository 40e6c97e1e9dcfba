_base_ = [
    '_base_/models/repvgg-B3g4_lbs-mixup_in1k.py',
    '_base_/datasets/imagenet_bs64_pil_resize_autoaug.py',
    '_base_/schedules/imagenet_bs256_coslr_warmup_200e.py',
    '_base_/default_runtime.py',
]

_base_ = [
    '_base_/models/repvgg-B2_in1k.py',
    '_base_/datasets/imagenet_bs64_pil_resize.py',
    '_base_/schedules/imagenet_bs256_coslr_120e.py',
    '_base_/default_runtime.py',
]

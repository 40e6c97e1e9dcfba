# The 200-epoch recipe: the 120-epoch optimizer, 5 epochs of linear warm-up from 0.25x,
# then cosine to 0 over the remaining 195 epochs.
_base_ = './imagenet_bs256_coslr_120e.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=195, by_epoch=True, begin=5, end=200),
]

train_cfg = dict(max_epochs=200)

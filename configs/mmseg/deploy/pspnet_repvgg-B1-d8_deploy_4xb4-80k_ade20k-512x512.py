# The deploy form of the config below (every RepVGG block one 3x3 conv): load a checkpoint
# converted by tools/reparameterize_repvgg.py.
_base_ = '../pspnet_repvgg-B1-d8_4xb4-80k_ade20k-512x512.py'

model = dict(backbone=dict(deploy=True))

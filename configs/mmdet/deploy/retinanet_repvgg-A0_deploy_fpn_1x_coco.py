# The deploy form of the config below (every RepVGG block one 3x3 conv): load a checkpoint
# converted by tools/reparameterize_repvgg.py.
_base_ = '../retinanet_repvgg-A0_fpn_1x_coco.py'

model = dict(backbone=dict(deploy=True))

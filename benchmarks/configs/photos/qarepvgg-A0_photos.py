# QARepVGG-A0 on the photos data set: RepVGG-A0's photos recipe with the QARepVGG block
# and the learning rate its digits recipe measured stable (0.01, configs/digits/).
_base_ = './repvgg-A0_photos.py'

model = dict(backbone=dict(block_type='qarepvgg'))
optim_wrapper = dict(optimizer=dict(lr=0.01))

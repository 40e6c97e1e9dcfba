# The paper's 120-epoch recipe: SGD, total batch 256, cosine from 0.1 to 0 per epoch.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
    # Decay multipliers for BN weights/biases (norm) and conv/linear biases (bias). 1.0
    # decays every parameter, as OpenMMLab's published recipe does. The paper applies no
    # weight decay to BN weights/biases and biases: set both to 0.0, e.g.
    # --cfg-options optim_wrapper.paramwise_cfg.norm_decay_mult=0.0 \
    #               optim_wrapper.paramwise_cfg.bias_decay_mult=0.0
    paramwise_cfg=dict(norm_decay_mult=1.0, bias_decay_mult=1.0),
)

param_scheduler = dict(type='CosineAnnealingLR', T_max=120, by_epoch=True, begin=0, end=120)

train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# lr 0.1 is for 4 GPUs x 64 images; tools/train.py --auto-scale-lr rescales it linearly to
# the actual total batch.
auto_scale_lr = dict(base_batch_size=256)

# mmdet's 1x schedule (schedule_1x.py): 12 epochs, SGD momentum 0.9, weight decay 1e-4,
# linear warm-up over 500 iterations, lr x0.1 after epochs 8 and 11. The lr is the
# detector's (RetinaNet and FCOS: 0.01 for 8 GPUs x 2 images).
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)

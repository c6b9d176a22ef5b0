# The 1x schedule (12 epochs, steps at 8 and 11) of the SLaK-T Cascade Mask
# R-CNN (paper, from a 120-epoch ImageNet checkpoint: 48.4 box / 41.8 mask).
_base_ = ['./cascade_mask_rcnn_slak_t_fpn_3x_coco.py']

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000
    ),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1,
    ),
]

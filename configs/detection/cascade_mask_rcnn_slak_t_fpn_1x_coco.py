# The 1x schedule (12 epochs, steps at 8 and 11) of the SLaK-T Cascade Mask
# R-CNN (paper, from a 120-epoch ImageNet checkpoint: 48.4 box / 41.8 mask).
_base_ = ['./cascade_mask_rcnn_slak_t_fpn_3x_coco.py']

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
# The 3x schedule's warm-up, then steps at epochs 8 and 11.
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=max_epochs, milestones=[8, 11]),
]

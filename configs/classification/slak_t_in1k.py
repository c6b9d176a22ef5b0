# SLaK-T on ImageNet-1k, 300 epochs, sparse training from scratch
# (paper: 82.5 top-1).
_base_ = ['./_base_/slak_in1k.py']

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1), head=dict(in_channels=998)
)
# Released sparse-training settings of SLaK-T: the base's EMA and sparse
# training (T as in the base) with prune rate 0.5 and a mask update every
# 2000 optimizer steps.
custom_hooks = [
    _base_.custom_hooks[0],
    dict(_base_.custom_hooks[1], prune_rate=0.5, update_interval=2000),
]

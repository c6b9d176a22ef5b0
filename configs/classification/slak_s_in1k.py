# SLaK-S on ImageNet-1k, 300 epochs, sparse training from scratch
# (paper: 83.8 top-1).
_base_ = ['./_base_/slak_in1k.py']

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.4), head=dict(in_channels=998)
)
# The base config holds the released sparse-training settings of SLaK-S/B.

# SLaK-B on ImageNet-1k, 300 epochs, sparse training from scratch
# (paper: 84.0 top-1).
_base_ = ['./_base_/slak_in1k.py']

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1331)
)
# The base config holds the released sparse-training settings of SLaK-S/B.

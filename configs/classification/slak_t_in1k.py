# SLaK-T on ImageNet-1k, 300 epochs, sparse training from scratch
# (paper: 82.5 top-1).
_base_ = ['./_base_/slak_in1k.py']

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1), head=dict(in_channels=998)
)

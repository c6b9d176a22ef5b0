# SLaK-S on ImageNet-1k, 300 epochs, sparse training from scratch
# (paper: 83.8 top-1).
_base_ = ['./_base_/slak_in1k.py']

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.4), head=dict(in_channels=998)
)
# Released sparse-training settings of SLaK-S.
custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(
        type='SparseTrainingHook',
        sparsity=0.4,
        init='snip',
        growth='random',
        prune_rate=0.3,
        update_interval=100,
        module_path=None,
    ),
]

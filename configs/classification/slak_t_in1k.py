# SLaK-T on ImageNet-1k, 300 epochs, sparse training from scratch
# (paper: 82.5 top-1).
_base_ = ['./_base_/slak_in1k.py']

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1), head=dict(in_channels=998)
)
# Released sparse-training settings of SLaK-T (EMA and T as in the base).
custom_hooks = [
    dict(
        type='EMAHook',
        momentum=1e-4,
        interval=4,
        update_buffers=True,
        priority='ABOVE_NORMAL',
    ),
    dict(
        type='SparseTrainingHook',
        sparsity=0.4,
        init='snip',
        growth='random',
        prune_rate=0.5,
        update_interval=2000,
        total_steps=(1281167 // (128 * 8 * 4)) * 300,
        module_path=None,
    ),
]

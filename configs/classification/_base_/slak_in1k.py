# SLaK on ImageNet-1k with mmpretrain: the ConvNeXt recipe (AdamW lr 4e-3 at
# batch 4096, 300 epochs, 20 warm-up epochs then cosine, EMA, Mixup/CutMix,
# RandAugment, RandomErasing, label smoothing 0.1), trained sparse.
# Batch 4096 = 8 GPUs x 128 images x 4 accumulated iterations.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../../_base_/sparse_training.py',
    '../../_base_/exact_resume.py',
]
custom_imports = dict(imports=['slak_mm'], allow_failed_imports=False)
default_hooks = dict(_base_.exact_resume_hooks)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SLaK',
        arch='tiny',
        kernel_sizes=(51, 49, 47, 13),
        small_kernel=5,
        width_factor=1.3,
        drop_path_rate=0.1,
        layer_scale_init_value=1e-6,
        out_indices=3,
        gap_before_final_norm=True,
        norm_cfg=dict(type='SyncBN'),
    ),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=998,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'
        ),
        init_cfg=None,
    ),
    init_cfg=dict(
        type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02, bias=0.0
    ),
    train_cfg=dict(
        augments=[
            dict(type='Mixup', alpha=0.8),
            dict(type='CutMix', alpha=1.0),
        ]
    ),
)

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=4e-3), accumulative_counts=4, clip_grad=None
)

# Dynamic sparse training over the whole model (head included, as
# released): SNIP layer densities, magnitude prune + random regrow.
# EMA as the release's ModelEma: decay 0.9999 per optimizer step (one
# update every 4 accumulated iterations), BN buffers averaged too.
# T of the prune-rate cosine as the release derives it: optimizer steps
# per epoch = len(train set) // total batch (1,281,167 // 4096 = 312),
# times 300 epochs = 93,600 (mmengine itself runs 313 steps per epoch).
custom_hooks = [
    dict(
        type='EMAHook',
        momentum=1e-4,
        interval=4,
        update_buffers=True,
        priority='ABOVE_NORMAL',
    ),
    dict(
        _base_.sparse_training,
        update_interval=100,
        total_steps=(1281167 // (128 * 8 * 4)) * 300,
        module_path=None,
    ),
]
auto_scale_lr = dict(base_batch_size=4096)

# The context demo (tools/misc/demo_context.py, `make demo`), model (a): a
# narrow SLaK with the real 51/49/47/13 kernels, trained from scratch with
# dynamic sparse training, on generated ADE20K-layout data whose labels need
# long-range context (tools/misc/make_synthetic_data.py ade20k-context): each
# stripe's class shows only in a marker at least 21 rows away from every
# labelled pixel of the stripe.
#
# Decoder: Semantic FPN, which has no global pooling. UperNet's pyramid
# pooling module averages the deepest map over the whole image and so gives
# even a small-kernel backbone global context for free; with FPN every path
# from the marker to a pixel runs through the backbone's convolutions, which
# is what the demo compares. Models (b) and (c) change only the backbone
# kernels (demo_context_fpn_convnext7x7_ade20k_synthetic.py) or freeze the
# large kernels (demo_context_fpn_slak_frozen_ade20k_synthetic.py).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/slak_t_downstream.py',
    '../_base_/sparse_training.py',
    '../_base_/exact_resume.py',
]
custom_imports = dict(imports=['slak_mm'], allow_failed_imports=False)

data_root = 'data/context/ADEChallengeData2016'
classes = ('wall', 'building', 'sky', 'floor')
crop_size = (96, 96)
norm_cfg = dict(type='BN', requires_grad=True)
# SLaK's widths are the base widths x 1.3 (int): 31, 62, 124, 249.
backbone_channels = [31, 62, 124, 249]

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    # SLaK-T's kernels, narrow and shallow, no drop path.
    backbone=dict(
        _base_.slak_t_backbone,
        _delete_=True,
        arch=dict(depths=[1, 1, 3, 1], channels=[24, 48, 96, 192]),
        drop_path_rate=0.0,
        norm_cfg=norm_cfg,
    ),
    neck=dict(in_channels=backbone_channels, out_channels=32),
    decode_head=dict(
        in_channels=[32, 32, 32, 32],
        channels=32,
        num_classes=len(classes),
        norm_cfg=norm_cfg,
    ),
    test_cfg=dict(mode='whole'),
)

# No resizing or cropping: stripe edges stay on the 4-pixel grid of the stem
# and marker distances stay as generated. Flips keep the task the same.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# What both loaders share: in-process loading of the generated data.
loader = dict(num_workers=0, persistent_workers=False)
dataset = dict(
    type='ADE20KDataset',
    data_root=data_root,
    reduce_zero_label=True,
    metainfo=dict(classes=classes),
)
train_dataloader = dict(
    loader,
    batch_size=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'
        ),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    loader,
    batch_size=1,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation',
        ),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# Trained from scratch: plain AdamW (no layer decay), short warm-up, then
# linear decay to zero.
max_iters = 400
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05
    ),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(
        type='PolyLR',
        power=1.0,
        begin=30,
        end=max_iters,
        eta_min=0.0,
        by_epoch=False,
    ),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters
)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    _base_.exact_resume_hooks,
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        _base_.exact_resume_hooks.checkpoint,
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
    ),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', draw=False),
)
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False)

# Dynamic sparse training of the backbone (SNIP densities, random regrowth).
custom_hooks = [dict(_base_.sparse_training, update_interval=50)]
randomness = dict(seed=0)

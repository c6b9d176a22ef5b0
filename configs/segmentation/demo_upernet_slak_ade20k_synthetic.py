# The CPU demo: the real UperNet + SLaK recipe made small enough to train in
# minutes on generated ADE20K-layout data (tools/misc/make_synthetic_data.py).
# Narrow widths, the real 51/49/47/13 kernels, 96x96 images, 4 classes.
_base_ = ['./upernet_slak_t_ade20k.py', '../_base_/sparse_training.py']

data_root = 'data/synthetic/ADEChallengeData2016'
classes = ('wall', 'building', 'sky', 'floor')
crop_size = (96, 96)
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(
            _delete_=True, depths=[1, 1, 3, 1], channels=[24, 48, 96, 192]
        ),
        drop_path_rate=0.1,
        norm_cfg=norm_cfg,
        init_cfg=None,
    ),
    decode_head=dict(
        in_channels=[31, 62, 124, 249],
        channels=64,
        num_classes=len(classes),
        norm_cfg=norm_cfg,
    ),
    auxiliary_head=dict(
        in_channels=124,
        channels=32,
        num_classes=len(classes),
        norm_cfg=norm_cfg,
    ),
    test_cfg=dict(mode='whole'),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(96, 96),
        ratio_range=(0.8, 1.25),
        keep_ratio=True,
    ),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# What both loaders share: in-process loading of the generated data.
loader = dict(num_workers=0, persistent_workers=False)
dataset = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(
    loader, batch_size=8, dataset=dict(dataset, pipeline=train_pipeline)
)
# One image per batch for validation and testing, as in mmseg: images of
# different sizes cannot share a batch (nothing pads them there).
val_dataloader = dict(
    loader, batch_size=1, dataset=dict(dataset, pipeline=test_pipeline)
)
test_dataloader = val_dataloader

max_iters = 200
optim_wrapper = dict(optimizer=dict(lr=1e-3))
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
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters),
    visualization=dict(draw=False),
)
env_cfg = dict(cudnn_benchmark=False)

# Trained from scratch here, so dynamic sparse training instead of the static
# masks of fine-tuning.
custom_hooks = [
    dict(_base_.sparse_training, update_interval=50),
    # Warns when annotation values fall outside the configured classes.
    dict(type='SegLabelCheckHook'),
]
randomness = dict(seed=0)

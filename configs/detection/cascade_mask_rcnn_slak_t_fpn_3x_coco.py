# Cascade Mask R-CNN with SLaK-T + FPN on COCO, 3x schedule (36 epochs,
# steps at 27 and 33), DETR-style multi-scale resize/crop, three 4conv1fc
# GIoU box heads. Batch 16 = 8 GPUs x 2 images (paper: 51.3 box AP / 44.3
# mask AP). Fine-tuning keeps the ImageNet checkpoint's zero pattern.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/slak_t_downstream.py',
    '../_base_/exact_resume.py',
]
custom_imports = dict(imports=['slak_mm'], allow_failed_imports=False)
default_hooks = dict(_base_.exact_resume_hooks)

# An ImageNet-1k SLaK-T checkpoint (released or converted). Override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint_file = 'checkpoints/slak_tiny_in1k.pth'
# SyncBN for multi-GPU runs; the Runner reverts it to BN on one process.
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _base_.slak_t_backbone,
        _delete_=True,
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
    ),
    neck=dict(in_channels=[124, 249, 499, 998]),
    roi_head=dict(
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=80,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0.0, 0.0, 0.0, 0.0],
                    target_stds=target_stds,
                ),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=norm_cfg,
                loss_cls=dict(
                    type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0
                ),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0),
            )
            # One 4conv1fc GIoU head per cascade stage, tighter each time.
            for target_stds in (
                [0.1, 0.1, 0.2, 0.2],
                [0.05, 0.05, 0.1, 0.1],
                [0.033, 0.033, 0.067, 0.067],
            )
        ]
    ),
)

# Multi-scale resize / crop as in DETR and Sparse R-CNN.
# Short sides 480, 512, ..., 800, long sides at most 1333.
detr_scales = [(480 + 32 * i, 1333) for i in range(11)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=detr_scales,
                    keep_ratio=True,
                )
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True,
                ),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True,
                ),
                dict(
                    type='RandomChoiceResize',
                    scales=detr_scales,
                    keep_ratio=True,
                ),
            ],
        ],
    ),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000
    ),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1,
    ),
]

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='SLaKLearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0002,
        betas=(0.9, 0.999),
        weight_decay=0.05,
    ),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Keep the zero pattern of the sparse ImageNet checkpoint while fine-tuning.
custom_hooks = [dict(type='StaticSparsityHook')]

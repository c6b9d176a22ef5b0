# A CPU-sized Cascade Mask R-CNN + SLaK for trying detection on your own
# COCO-format data (or on generated data:
# python tools/misc/make_synthetic_data.py coco --out data/synthetic
#     --num-classes 4 --image-size 128).
# The real 1x recipe (optimizer, layer-wise lr decay, 4conv1fc GIoU heads,
# sparse masks) with a narrow SLaK (kernels 13/11/9/7), narrow FPN and RoI
# heads, fewer proposals, 128 px images and no pretrained weights.
# For your data set data_root, the annotation files and classes (the
# category names of your json, in any order; num_classes follows them).
_base_ = ['./cascade_mask_rcnn_slak_t_fpn_1x_coco.py']

data_root = 'data/synthetic/coco/'
train_ann_file = 'annotations/instances_train2017.json'
val_ann_file = 'annotations/instances_val2017.json'
train_img_dir = 'train2017/'
val_img_dir = 'val2017/'
classes = ('person', 'bicycle', 'car', 'motorcycle')
num_classes = len(classes)
image_scale = (128, 128)

channels = 32  # FPN and RoI head width
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True, depths=[1, 1, 2, 1], channels=[16, 32, 64, 128]
        ),
        kernel_sizes=(13, 11, 9, 7),
        small_kernel=3,
        drop_path_rate=0.1,
        norm_cfg=norm_cfg,
        init_cfg=None,
    ),
    neck=dict(in_channels=[20, 41, 83, 166], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        # The base's three 4conv1fc GIoU heads, narrow.
        bbox_head=[
            dict(
                head,
                in_channels=channels,
                conv_out_channels=channels,
                fc_out_channels=2 * channels,
                num_classes=num_classes,
                norm_cfg=norm_cfg,
            )
            for head in _base_.model.roi_head.bbox_head
        ],
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(
            in_channels=channels,
            conv_out_channels=channels,
            num_classes=num_classes,
        ),
    ),
    train_cfg=dict(rpn_proposal=dict(nms_pre=400, max_per_img=200)),
    # A briefly trained model scores below mmdet's default 0.05; keep
    # low-scoring detections so that the metric sees them.
    test_cfg=dict(
        rpn=dict(nms_pre=400, max_per_img=200),
        rcnn=dict(score_thr=0.001, max_per_img=50),
    ),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=(
            'img_id',
            'img_path',
            'ori_shape',
            'img_shape',
            'scale_factor',
        ),
    ),
]
# What both loaders share: in-process loading of this data set's classes.
loader = dict(num_workers=0, persistent_workers=False)
dataset = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(
    loader,
    batch_size=2,
    dataset=dict(
        dataset,
        ann_file=train_ann_file,
        data_prefix=dict(img=train_img_dir),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    loader,
    batch_size=1,
    dataset=dict(
        dataset,
        ann_file=val_ann_file,
        data_prefix=dict(img=val_img_dir),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
# A shorter warm-up, then the 1x steps of the base.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    _base_.param_scheduler[1],
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs),
    visualization=dict(draw=False),
)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)

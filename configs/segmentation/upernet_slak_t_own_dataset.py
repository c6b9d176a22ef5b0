# UperNet + SLaK-T on your own semantic segmentation data: copy this file,
# then set data_root, classes (and palette), the file suffixes and max_iters.
#
# Layout (mmseg's BaseSegDataset; the split names are yours):
#   <data_root>/img_dir/train/*.jpg   <data_root>/ann_dir/train/*.png
#   <data_root>/img_dir/val/*.jpg     <data_root>/ann_dir/val/*.png
# An annotation has the image's name and size and holds one uint8 label per
# pixel: 0 .. len(classes) - 1 for classes[0], classes[1], ..., and 255 for
# pixels to ignore. If 0 means "unlabelled" in your files and classes start
# at 1, set reduce_zero_label = True (0 -> 255, v -> v - 1).
# SegLabelCheckHook warns before training/testing when annotation values
# fall outside the classes (they would be ignored or break the loss).
_base_ = ['./upernet_slak_t_ade20k.py']

data_root = 'data/my_dataset'
classes = ('background', 'road', 'vehicle')
palette = [[0, 0, 0], [128, 64, 128], [0, 0, 142]]
num_classes = len(classes)
reduce_zero_label = False
img_suffix = '.jpg'
seg_map_suffix = '.png'

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=reduce_zero_label),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True,
    ),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=reduce_zero_label),
    dict(type='PackSegInputs'),
]
# The data set of both splits (replacing the base's ADE20K data set).
dataset = dict(
    _delete_=True,
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix=img_suffix,
    seg_map_suffix=seg_map_suffix,
    reduce_zero_label=reduce_zero_label,
)
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        dataset,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'
        ),
        pipeline=train_pipeline,
    ),
)
# One image per batch: images of different sizes cannot share a batch.
val_dataloader = dict(
    batch_size=1,
    dataset=dict(
        dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader

# The schedule follows max_iters: warm-up, then poly decay to the end.
max_iters = 40000
warmup_iters = 1500
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=False,
        begin=0,
        end=warmup_iters,
    ),
    dict(
        type='PolyLR',
        power=1.0,
        begin=warmup_iters,
        end=max_iters,
        eta_min=0.0,
        by_epoch=False,
    ),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=4000
)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))

custom_hooks = [
    # Keeps the zero pattern of the sparse ImageNet checkpoint.
    dict(type='StaticSparsityHook'),
    dict(type='SegLabelCheckHook'),
]

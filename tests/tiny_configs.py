"""Tiny builds of the shipped demo configs on generated data, one per task
(segmentation, detection, classification): each builder returns the config
and the metric its test run reports."""

import os.path as osp

from mmengine.config import Config

from slak_mm.datasets import (
    generate_ade20k,
    generate_coco_instances,
    generate_imagenet,
)

from .helpers import KERNELS, ONE_BLOCK_ARCH, REPO, TINY_WIDTHS


def tiny_backbone(cfg):
    cfg.model.backbone.arch = ONE_BLOCK_ARCH
    cfg.model.backbone.kernel_sizes = KERNELS
    cfg.model.backbone.small_kernel = 3
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.backbone.init_cfg = None


def segmentation_config(tmp_path):
    data = generate_ade20k(
        tmp_path / 'data', num_train=2, num_val=2, image_size=64, seed=5
    )
    cfg = Config.fromfile(
        osp.join(
            REPO, 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
        )
    )
    tiny_backbone(cfg)
    cfg.model.decode_head.in_channels = TINY_WIDTHS
    cfg.model.auxiliary_head.in_channels = TINY_WIDTHS[2]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data['data_root']
    return cfg, 'mIoU'


def detection_config(tmp_path):
    data = generate_coco_instances(
        tmp_path / 'data', num_train=2, num_val=2, image_size=64, seed=6
    )
    cfg = Config.fromfile(
        osp.join(
            REPO,
            'configs/detection/demo_cascade_mask_rcnn_slak_coco_synthetic.py',
        )
    )
    tiny_backbone(cfg)
    cfg.model.neck.in_channels = TINY_WIDTHS
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data['data_root'] + '/'
    cfg.val_evaluator.ann_file = data['val_evaluator']['ann_file']
    cfg.test_evaluator = cfg.val_evaluator
    return cfg, 'coco/bbox_mAP'


def classification_config(tmp_path):
    data = generate_imagenet(
        tmp_path / 'data', num_train=4, num_val=4, image_size=64, seed=7
    )
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/classification/slak_t_in1k.py')
    )
    tiny_backbone(cfg)
    cfg.model.head.num_classes = 4
    cfg.model.head.in_channels = TINY_WIDTHS[-1]
    cfg.data_preprocessor.num_classes = 4
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=72, edge='short'),
        dict(type='CenterCrop', crop_size=64),
        dict(type='PackInputs'),
    ]
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 2
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].dataset = dict(data['val_dataset'], pipeline=test_pipeline)
    cfg.val_evaluator = dict(type='Accuracy', topk=(1,))
    cfg.test_evaluator = cfg.val_evaluator
    return cfg, 'accuracy/top1'

"""Shrunk train/test configs on generated data for all three toolkits
(the end-to-end tests and the ``tools/test.py --amp`` tests): each builder
writes a config under ``tmp_path`` and returns a :class:`Task` saying what
its runs must save."""

import os.path as osp
from dataclasses import dataclass

from mmengine.config import Config

from slak_mm.datasets import (
    generate_ade20k,
    generate_coco_instances,
    generate_imagenet,
)

from .helpers import (
    KERNELS,
    ONE_BLOCK_ARCH,
    REPO,
    SMALL,
    TINY_WIDTHS,
    shrink_det_config,
    shrink_seg_config,
)

SEG_DEMO = 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
ONE_BLOCK_BACKBONE = dict(
    arch=ONE_BLOCK_ARCH,
    kernel_sizes=KERNELS,
    small_kernel=SMALL,
    drop_path_rate=0.0,
    norm_cfg=dict(type='BN'),
    init_cfg=None,
)


@dataclass
class Task:
    """A shrunk config and what its runs must save.

    Attributes:
        config (str): The written config.
        by_epoch (bool): Epoch-based (checkpoints ``epoch_N.pth``) or
            iteration-based (``iter_N.pth``).
        length (int): Epochs or iterations of the training.
        iters_per_epoch (int): Training iterations per epoch (1 when
            iteration-based).
        num_test (int): Samples of the test split.
        metrics (dict): Metric key -> the (low, high) range it must lie in.
        out (str): What ``tools/test.py --out`` writes: a directory of
            label maps (mmseg) or a .pkl of predictions.
        paint (bool): Whether ``tools/test.py`` also gets ``--show-dir``.
    """

    config: str
    by_epoch: bool
    length: int
    iters_per_epoch: int
    num_test: int
    metrics: dict
    out: str = 'preds.pkl'
    paint: bool = True

    def checkpoint(self, work_dir, index):
        kind = 'epoch' if self.by_epoch else 'iter'
        return osp.join(work_dir, f'{kind}_{index}.pth')

    @property
    def total_iters(self):
        return self.length * self.iters_per_epoch


def use_generated_data(cfg, data, train_pipeline, test_pipeline):
    """Points the three loaders at generated data, in-process and small."""
    for loader, split, pipeline in (
        ('train_dataloader', 'train', train_pipeline),
        ('val_dataloader', 'val', test_pipeline),
        ('test_dataloader', 'val', test_pipeline),
    ):
        cfg[loader].batch_size = 2
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].dataset = dict(data[f'{split}_dataset'], pipeline=pipeline)


def two_epochs(cfg, evaluator, tmp_path):
    """Two epochs, a checkpoint after each, one validation at the end with
    ``evaluator`` (also the test evaluator); returns the written config."""
    cfg.val_evaluator = evaluator
    cfg.test_evaluator = evaluator
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    path = str(tmp_path / 'config.py')
    cfg.dump(path)
    return path


def segmentation_task(tmp_path):
    data = generate_ade20k(
        tmp_path / 'data',
        num_train=8,
        num_val=4,
        image_size=64,
        num_classes=4,
        seed=1,
    )
    cfg = Config.fromfile(osp.join(REPO, SEG_DEMO))
    shrink_seg_config(cfg, data['data_root'], max_iters=4)
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    cfg.dump(str(tmp_path / 'seg.py'))
    percent = (0.0, 100.0)
    return Task(
        config=str(tmp_path / 'seg.py'),
        by_epoch=False,
        length=4,
        iters_per_epoch=1,
        num_test=4,
        metrics=dict(aAcc=percent, mIoU=percent, mAcc=percent),
        out='preds',
    )


def classification_task(tmp_path):
    data = generate_imagenet(
        tmp_path / 'data',
        num_train=8,
        num_val=4,
        image_size=64,
        num_classes=4,
        seed=2,
    )
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/classification/slak_t_in1k.py')
    )
    cfg.model.backbone.update(ONE_BLOCK_BACKBONE)
    cfg.model.head.num_classes = 4
    cfg.model.head.in_channels = TINY_WIDTHS[-1]
    cfg.data_preprocessor.num_classes = 4
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=64),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=72, edge='short'),
        dict(type='CenterCrop', crop_size=64),
        dict(type='PackInputs'),
    ]
    use_generated_data(cfg, data, train_pipeline, test_pipeline)
    cfg.param_scheduler[0].end = 1
    cfg.param_scheduler[1].begin = 1
    return Task(
        config=two_epochs(cfg, dict(type='Accuracy', topk=(1,)), tmp_path),
        by_epoch=True,
        length=2,
        iters_per_epoch=4,
        num_test=4,
        metrics={'accuracy/top1': (0.0, 100.0)},
    )


def detection_task(tmp_path):
    data = generate_coco_instances(
        tmp_path / 'data',
        num_train=4,
        num_val=2,
        image_size=96,
        num_classes=3,
        seed=3,
    )
    cfg = Config.fromfile(
        osp.join(
            REPO, 'configs/detection/cascade_mask_rcnn_slak_t_fpn_1x_coco.py'
        )
    )
    shrink_det_config(cfg, ONE_BLOCK_BACKBONE)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=(96, 96), keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(96, 96), keep_ratio=True),
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
    use_generated_data(cfg, data, train_pipeline, test_pipeline)
    # COCO mAP lies in [0, 1]; -1 would mean no detections were scored.
    fraction = (0.0, 1.0)
    return Task(
        config=two_epochs(cfg, data['val_evaluator'], tmp_path),
        by_epoch=True,
        length=2,
        iters_per_epoch=2,
        num_test=2,
        metrics={'coco/bbox_mAP': fraction, 'coco/segm_mAP': fraction},
        # Painting boxes and masks adds most of a minute on two CPU cores.
        paint=False,
    )

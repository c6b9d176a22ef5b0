"""Train -> test -> resume through tools/ for all three toolkits, on
generated data, judged by the metrics and checkpoints the runs save; plus
a 2-process training run through dist_train.sh."""

import math
import os
import os.path as osp
import pickle
import socket
import sys
from dataclasses import dataclass

import pytest
import torch
from mmengine.config import Config

from slak_mm.datasets import (
    generate_ade20k,
    generate_coco_instances,
    generate_imagenet,
)

from .conftest import KERNELS, ONE_BLOCK_ARCH, REPO, SMALL, TINY_WIDTHS

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


def segmentation_task(tmp_path, helpers):
    data = generate_ade20k(
        tmp_path / 'data',
        num_train=8,
        num_val=4,
        image_size=64,
        num_classes=4,
        seed=1,
    )
    cfg = Config.fromfile(osp.join(REPO, SEG_DEMO))
    helpers['shrink_seg_config'](cfg, data['data_root'], max_iters=4)
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


def classification_task(tmp_path, helpers):
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


def detection_task(tmp_path, helpers):
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
    helpers['shrink_det_config'](cfg, ONE_BLOCK_BACKBONE)
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


def assert_metrics(metrics, expected):
    for key, (low, high) in expected.items():
        assert key in metrics, (key, sorted(metrics))
        assert low <= metrics[key] <= high, (key, metrics[key])


@pytest.mark.parametrize(
    'make_task',
    [segmentation_task, classification_task, detection_task],
    ids=['segmentation', 'classification', 'detection'],
)
def test_train_test_resume(
    make_task,
    tmp_path,
    run_tool,
    shrink_seg_config,
    shrink_det_config,
    saved_scalars,
    saved_test_metrics,
):
    task = make_task(
        tmp_path,
        dict(
            shrink_seg_config=shrink_seg_config,
            shrink_det_config=shrink_det_config,
        ),
    )

    # Train: every iteration logged once, the validation at the end.
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', task.config, '--work-dir', work_dir)
    train, val = saved_scalars(work_dir)
    assert sorted(train) == list(range(1, task.total_iters + 1))
    assert all(math.isfinite(r['loss']) for r in train.values())
    (last_val,) = val
    assert_metrics(last_val, task.metrics)
    final = torch.load(
        task.checkpoint(work_dir, task.length),
        map_location='cpu',
        weights_only=True,
    )
    assert final['meta']['iter'] == task.total_iters

    # Test the final checkpoint: the metrics of the validation that ended
    # the training (the same weights on the same split), one prediction
    # per test sample in --out and, where painted, one image in --show-dir.
    test_dir = str(tmp_path / 'test')
    out = str(tmp_path / task.out)
    show_dir = tmp_path / 'painted'
    paint = ['--show-dir', str(show_dir)] if task.paint else []
    run_tool(
        'tools/test.py',
        task.config,
        task.checkpoint(work_dir, task.length),
        '--work-dir',
        test_dir,
        '--out',
        out,
        *paint,
    )
    if task.paint:
        painted = [
            p for p in show_dir.rglob('*') if p.suffix in ('.png', '.jpg')
        ]
        assert len(painted) == task.num_test, painted
    tested = saved_test_metrics(test_dir)
    assert_metrics(tested, task.metrics)
    for key in task.metrics:
        assert tested[key] == pytest.approx(last_val[key], abs=1e-6), key
    if osp.isdir(out):
        assert len(os.listdir(out)) == task.num_test
    else:
        with open(out, 'rb') as f:
            assert len(pickle.load(f)) == task.num_test

    # Resume from the middle: the run goes on at the next iteration with
    # the saved schedule and optimizer state, and ends where the
    # uninterrupted run ended.
    middle = task.length // 2
    resumed_dir = str(tmp_path / 'resumed')
    run_tool(
        'tools/train.py',
        task.config,
        '--work-dir',
        resumed_dir,
        '--resume',
        task.checkpoint(work_dir, middle),
    )
    resumed_train, resumed_val = saved_scalars(resumed_dir)
    first = middle * task.iters_per_epoch + 1
    assert sorted(resumed_train) == list(range(first, task.total_iters + 1))
    for step, record in resumed_train.items():
        assert record['lr'] == pytest.approx(train[step]['lr'], rel=1e-6)
    assert_metrics(resumed_val[-1], task.metrics)
    resumed_final = torch.load(
        task.checkpoint(resumed_dir, task.length),
        map_location='cpu',
        weights_only=True,
    )
    assert resumed_final['meta']['iter'] == task.total_iters
    assert resumed_final['meta']['epoch'] == final['meta']['epoch']
    states = final['optimizer']['state']
    resumed_states = resumed_final['optimizer']['state']
    assert resumed_states.keys() == states.keys()
    # AdamW's step counts every update since the first iteration (one per
    # accumulative_counts iterations).
    accumulate = Config.fromfile(task.config).optim_wrapper.get(
        'accumulative_counts', 1
    )
    for key, state in states.items():
        assert int(resumed_states[key]['step']) == int(state['step'])
        assert int(state['step']) == task.total_iters // accumulate


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_train_two_processes(tmp_path, run_command, saved_scalars):
    data = generate_ade20k(
        tmp_path / 'data',
        num_train=8,
        num_val=2,
        image_size=64,
        num_classes=4,
        seed=4,
    )
    root = data['data_root']
    # A free port, not a fixed one: another run of this suite on the
    # machine (or another launcher) may hold any fixed port.
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    work_dir = tmp_path / 'work'
    output = run_command(
        [
            'bash',
            'tools/dist_train.sh',
            SEG_DEMO,
            '2',
            '--work-dir',
            str(work_dir),
            '--cfg-options',
            f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            'train_cfg.max_iters=2',
            'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2',
            'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2',
        ],
        env=env,
    )
    assert 'using the gloo backend' in output
    # mmengine reports the world size as "GPU number".
    assert 'Distributed training: True' in output
    assert 'GPU number: 2' in output
    train, val = saved_scalars(str(work_dir))
    assert sorted(train) == [1, 2]
    (last_val,) = val
    assert 0.0 <= last_val['mIoU'] <= 100.0
    saved = torch.load(
        work_dir / 'iter_2.pth', map_location='cpu', weights_only=True
    )
    assert saved['meta']['iter'] == 2

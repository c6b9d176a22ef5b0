"""Train -> test -> resume through tools/ for all three toolkits, on
generated data, plus a 2-process training run through dist_train.sh."""

import os
import os.path as osp
import subprocess
import sys

from mmengine.config import Config

from slak_mm.datasets import (
    generate_ade20k,
    generate_coco_instances,
    generate_imagenet,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_ARCH = dict(depths=[1, 1, 1, 1], channels=[8, 16, 24, 32])
TINY_BACKBONE = dict(
    arch=TINY_ARCH,
    kernel_sizes=(13, 11, 9, 7),
    small_kernel=3,
    drop_path_rate=0.0,
    norm_cfg=dict(type='BN'),
    init_cfg=None,
)
TINY_WIDTHS = [10, 20, 31, 41]


def run_command(command, env=None, timeout=900):
    """Runs ``command`` in the repository; returns stdout + stderr."""
    result = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def run_tool(*args):
    return run_command([sys.executable, *args])


def write_config(cfg, path):
    cfg.dump(str(path))
    return str(path)


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


def test_segmentation_train_test_resume(tmp_path):
    data = generate_ade20k(
        tmp_path / 'data',
        num_train=8,
        num_val=4,
        image_size=64,
        num_classes=4,
        seed=1,
    )
    cfg = Config.fromfile(
        osp.join(
            REPO, 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
        )
    )
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data['data_root']
    cfg.train_dataloader.batch_size = 2
    cfg.model.backbone.arch = TINY_ARCH
    cfg.model.decode_head.in_channels = TINY_WIDTHS
    cfg.model.auxiliary_head.in_channels = TINY_WIDTHS[2]
    cfg.train_cfg.max_iters = 4
    cfg.train_cfg.val_interval = 4
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    cfg.default_hooks.logger.interval = 1
    config = write_config(cfg, tmp_path / 'seg.py')
    work_dir = str(tmp_path / 'work')

    out = run_tool('tools/train.py', config, '--work-dir', work_dir)
    assert 'Iter(train) [4/4]' in out
    assert 'mIoU' in out
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))

    out = run_tool(
        'tools/test.py',
        config,
        osp.join(work_dir, 'iter_4.pth'),
        '--work-dir',
        str(tmp_path / 'test'),
        '--out',
        str(tmp_path / 'preds'),
        '--show-dir',
        str(tmp_path / 'vis'),
    )
    assert 'mIoU' in out and 'aAcc' in out
    assert len(os.listdir(tmp_path / 'preds')) == 4

    resumed = str(tmp_path / 'resumed')
    out = run_tool(
        'tools/train.py',
        config,
        '--work-dir',
        resumed,
        '--resume',
        osp.join(work_dir, 'iter_2.pth'),
    )
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [3/4]' in out and 'Iter(train) [1/4]' not in out
    assert osp.isfile(osp.join(resumed, 'iter_4.pth'))


def test_classification_train_test_resume(tmp_path):
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
    cfg.model.backbone.update(TINY_BACKBONE)
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
    cfg.val_evaluator = dict(type='Accuracy', topk=(1,))
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 2
    cfg.param_scheduler[0].end = 1
    cfg.param_scheduler[1].begin = 1
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    config = write_config(cfg, tmp_path / 'cls.py')
    work_dir = str(tmp_path / 'work')

    out = run_tool('tools/train.py', config, '--work-dir', work_dir)
    assert 'Epoch(train) [2][4/4]' in out
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))

    preds = str(tmp_path / 'preds.pkl')
    out = run_tool(
        'tools/test.py',
        config,
        osp.join(work_dir, 'epoch_2.pth'),
        '--work-dir',
        str(tmp_path / 'test'),
        '--out',
        preds,
    )
    assert 'accuracy/top1' in out
    assert osp.getsize(preds) > 0

    out = run_tool(
        'tools/train.py',
        config,
        '--work-dir',
        str(tmp_path / 'resumed'),
        '--resume',
        osp.join(work_dir, 'epoch_1.pth'),
    )
    assert 'resumed epoch: 1' in out
    assert 'Epoch(train) [2][4/4]' in out and 'Epoch(train) [1]' not in out


def shrink_cascade_heads(model, channels=32, proposals=100):
    """Narrow FPN/RoI heads and fewer proposals: the real heads take minutes
    per iteration on two CPU cores."""
    model.neck.out_channels = channels
    model.rpn_head.in_channels = channels
    model.rpn_head.feat_channels = channels
    roi_head = model.roi_head
    roi_head.bbox_roi_extractor.out_channels = channels
    roi_head.mask_roi_extractor.out_channels = channels
    for head in roi_head.bbox_head:
        head.in_channels = channels
        head.conv_out_channels = channels
        head.fc_out_channels = 2 * channels
    roi_head.mask_head.in_channels = channels
    roi_head.mask_head.conv_out_channels = channels
    model.train_cfg.rpn_proposal.nms_pre = 2 * proposals
    model.train_cfg.rpn_proposal.max_per_img = proposals
    for stage in model.train_cfg.rcnn:
        stage.sampler.num = 64
    model.test_cfg.rpn.nms_pre = 2 * proposals
    model.test_cfg.rpn.max_per_img = proposals
    model.test_cfg.rcnn.max_per_img = 20


def test_detection_train_test_resume(tmp_path):
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
    cfg.model.backbone.update(TINY_BACKBONE)
    cfg.model.neck.in_channels = TINY_WIDTHS
    for head in cfg.model.roi_head.bbox_head:
        head.num_classes = 3
        head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.roi_head.mask_head.num_classes = 3
    shrink_cascade_heads(cfg.model)
    # After a few iterations every score is below the default 0.05.
    cfg.model.test_cfg.rcnn.score_thr = 0.0
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
    cfg.val_evaluator = data['val_evaluator']
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    config = write_config(cfg, tmp_path / 'det.py')
    work_dir = str(tmp_path / 'work')

    out = run_tool('tools/train.py', config, '--work-dir', work_dir)
    assert 'Epoch(train) [2][2/2]' in out
    preds = str(tmp_path / 'preds.pkl')
    out = run_tool(
        'tools/test.py',
        config,
        osp.join(work_dir, 'epoch_2.pth'),
        '--work-dir',
        str(tmp_path / 'test'),
        '--out',
        preds,
    )
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    assert osp.getsize(preds) > 0

    out = run_tool(
        'tools/train.py',
        config,
        '--work-dir',
        str(tmp_path / 'resumed'),
        '--resume',
        osp.join(work_dir, 'epoch_1.pth'),
    )
    assert 'resumed epoch: 1' in out
    assert 'Epoch(train) [2][2/2]' in out and 'Epoch(train) [1]' not in out


def test_dist_train_two_processes(tmp_path):
    data = generate_ade20k(
        tmp_path / 'data',
        num_train=8,
        num_val=2,
        image_size=64,
        num_classes=4,
        seed=4,
    )
    root = data['data_root']
    env = dict(os.environ, PYTHON=sys.executable, PORT='29511')
    output = run_command(
        [
            'bash',
            'tools/dist_train.sh',
            'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py',
            '2',
            '--work-dir',
            str(tmp_path / 'work'),
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
    assert 'Iter(train) [2/2]' in output
    assert osp.isfile(tmp_path / 'work' / 'iter_2.pth')

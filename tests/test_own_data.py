"""Training on one's own data: the own-dataset segmentation config, the
label check, the demo detection config and ``init_cfg`` from the command
line."""

import argparse
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import DefaultScope
from PIL import Image

from slak_mm.datasets import generate_ade20k, generate_coco_instances
from slak_mm.engine import SegLabelCheckHook, find_label_problems

from .helpers import (
    ONE_BLOCK_ARCH,
    REPO,
    run_tool,
    saved_scalars,
    saved_test_metrics,
)

TINY_WIDTHS = [10, 20, 31, 41]
OWN_CONFIG = osp.join(
    REPO, 'configs/segmentation/upernet_slak_t_own_dataset.py'
)
DEMO_CONFIG = osp.join(
    REPO, 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
)
DET_DEMO_CONFIG = osp.join(
    REPO, 'configs/detection/demo_cascade_mask_rcnn_slak_coco_synthetic.py'
)


def write_own_dataset(root, labels_per_split, size=64):
    """BaseSegDataset layout: img_dir/<split>/*.jpg, ann_dir/<split>/*.png.

    ``labels_per_split`` maps a split to a list of label sets; each image
    gets vertical bands with those label values.
    """
    rng = np.random.default_rng(0)
    for split, label_sets in labels_per_split.items():
        (root / 'img_dir' / split).mkdir(parents=True)
        (root / 'ann_dir' / split).mkdir(parents=True)
        for index, values in enumerate(label_sets):
            label = np.zeros((size, size), np.uint8)
            for band, value in enumerate(values):
                width = size // len(values)
                label[:, band * width : (band + 1) * width] = value
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image[..., 0] = label * 40  # learnable: colour gives the class
            Image.fromarray(image).save(
                root / 'img_dir' / split / f'{index}.jpg'
            )
            Image.fromarray(label).save(
                root / 'ann_dir' / split / f'{index}.png'
            )
    return str(root)


def test_own_dataset_config_trains_tests_and_warns(tmp_path):
    # Three classes (0, 1, 2); one validation file also holds 7, which no
    # class has, and 255, the ignore index.
    data_root = write_own_dataset(
        tmp_path / 'my_dataset',
        dict(
            train=[(0, 1, 2), (2, 1)],
            val=[(0, 1), (2, 7, 255)],
        ),
    )
    cfg = Config.fromfile(OWN_CONFIG)
    assert cfg.model.decode_head.num_classes == len(cfg.classes) == 3
    assert cfg.model.auxiliary_head.num_classes == 3
    assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters
    assert cfg.val_dataloader.batch_size == 1
    assert [h.type for h in cfg.custom_hooks] == [
        'StaticSparsityHook',
        'SegLabelCheckHook',
    ]
    cfg.model.backbone.update(
        arch=ONE_BLOCK_ARCH,
        kernel_sizes=(13, 11, 9, 7),
        small_kernel=3,
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=None,
    )
    cfg.model.decode_head.update(
        in_channels=TINY_WIDTHS, channels=16, norm_cfg=dict(type='BN')
    )
    cfg.model.auxiliary_head.update(
        in_channels=TINY_WIDTHS[2], channels=8, norm_cfg=dict(type='BN')
    )
    cfg.model.test_cfg = dict(mode='whole')
    cfg.model.data_preprocessor.size = (64, 64)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_dataloader.dataset.pipeline[2].scale = (64, 64)
    cfg.train_dataloader.dataset.pipeline[3].crop_size = (64, 64)
    cfg.val_dataloader.dataset.pipeline[1].scale = (64, 64)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.param_scheduler[0].end = 1
    cfg.param_scheduler[1].update(begin=1, end=2)
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    config = str(tmp_path / 'own.py')
    cfg.dump(config)

    out = run_tool('tools/train.py', config, '--work-dir', str(tmp_path / 'w'))
    train, (val,) = saved_scalars(str(tmp_path / 'w'))
    assert sorted(train) == [1, 2]
    assert 0 <= val['mIoU'] <= 100
    # The train files are fine; the validation file with 7 is named.
    assert 'SegLabelCheckHook: train' not in out
    val_file = osp.join(data_root, 'ann_dir', 'val', '1.png')
    (warning,) = [
        line for line in out.splitlines() if 'SegLabelCheckHook: val' in line
    ]
    assert 'WARNING' in warning
    assert warning.endswith(
        'SegLabelCheckHook: val annotations (2 of 2 files read): labels 7 '
        f'(in 1 files, e.g. {val_file}) are outside 0..2 (num_classes 3) '
        'and not the ignore index 255.'
    )


def test_demo_trap_five_classes_with_four_names_is_reported(tmp_path):
    """The demo config's 4 ADE20K names with 5-class data and
    num_classes=5: label 5 silently becomes 255 in mmseg."""
    from mmseg.registry import DATASETS

    import slak_mm  # noqa: F401

    data = generate_ade20k(
        tmp_path / 'data', num_train=6, num_val=2, num_classes=5, seed=3
    )
    cfg = Config.fromfile(DEMO_CONFIG)
    assert cfg.val_dataloader.batch_size == 1
    assert 'SegLabelCheckHook' in [h.type for h in cfg.custom_hooks]
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = data['data_root']
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(dataset_cfg)
    assert dataset.metainfo['label_map'][4] == 255  # the 5th class
    head = SimpleNamespace(num_classes=5, ignore_index=255)
    runner = SimpleNamespace(
        model=SimpleNamespace(decode_head=head),
        train_dataloader=SimpleNamespace(dataset=dataset),
    )
    hook = SegLabelCheckHook(error=True)
    with pytest.raises(ValueError) as info:
        hook.before_train(runner)
    message = str(info.value)
    assert 'the dataset has 4 classes' in message
    assert 'decode_head.num_classes is 5' in message
    # Stored value 5 (class index 4 after reduce_zero_label) is dropped.
    assert 'stored values 5 (in ' in message
    assert 'metainfo.classes does not name their class' in message
    # Run once per split.
    hook.before_train(runner)


def test_find_label_problems_maps_like_load_annotations(tmp_path):
    path = str(tmp_path / 'a.png')
    Image.fromarray(np.array([[0, 1, 2, 3, 200]], np.uint8)).save(path)
    # reduce_zero_label: 0 -> 255 (ignored), 1..3 -> 0..2, 200 -> 199.
    dropped, out_of_range, count = find_label_problems(
        [path], num_classes=2, reduce_zero_label=True, label_map={2: 255}
    )
    assert count == 1
    assert dropped == {3: [path]}
    assert out_of_range == {199: [path]}
    dropped, out_of_range, _ = find_label_problems([path], num_classes=201)
    assert dropped == {} and out_of_range == {}
    rgb = str(tmp_path / 'rgb.png')
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match='rgb.png: a label map must have one'):
        find_label_problems([rgb], num_classes=2)
    with pytest.raises(ValueError, match='max_files'):
        SegLabelCheckHook(max_files=1)


def test_init_cfg_from_the_command_line_as_documented(tmp_path):
    """The README's form for turning a pretrained file on in the demo
    config (whose init_cfg is None)."""
    from mmseg.registry import MODELS

    import slak_mm  # noqa: F401

    cfg = Config.fromfile(DEMO_CONFIG)
    with DefaultScope.overwrite_default_scope('mmseg'):
        source = MODELS.build(cfg.model.backbone)
    source.init_weights()
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    checkpoint = str(tmp_path / 'backbone.pth')
    torch.save(dict(state_dict=state), checkpoint)

    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(
        [
            '--cfg-options',
            'model.backbone.init_cfg._delete_=True',
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={checkpoint}',
            'model.backbone.init_cfg.prefix=backbone.',
        ]
    )
    cfg.merge_from_dict(args.cfg_options)
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=checkpoint, prefix='backbone.'
    )
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_demo_detection_config_trains_and_tests(tmp_path):
    data = generate_coco_instances(
        tmp_path / 'data', num_train=2, num_val=2, image_size=64, seed=8
    )
    root = data['data_root'] + '/'
    cfg = Config.fromfile(DET_DEMO_CONFIG)
    assert cfg.model.roi_head.mask_head.num_classes == len(cfg.classes)
    assert all(
        h.num_classes == len(cfg.classes) for h in cfg.model.roi_head.bbox_head
    )
    assert cfg.model.test_cfg.rcnn.score_thr < 0.05
    options = [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={data["val_evaluator"]["ann_file"]}',
        f'test_evaluator.ann_file={data["val_evaluator"]["ann_file"]}',
        'train_cfg.max_epochs=1',
        # No validation (mmengine validates after the last epoch whatever
        # the interval, not before val_begin): test.py evaluates.
        'train_cfg.val_begin=2',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1',
    ]
    work_dir = str(tmp_path / 'work')
    run_tool(
        'tools/train.py', DET_DEMO_CONFIG, '--work-dir', work_dir, *options
    )
    train, val = saved_scalars(work_dir)
    assert sorted(train) == [1] and val == []
    run_tool(
        'tools/test.py',
        DET_DEMO_CONFIG,
        osp.join(work_dir, 'epoch_1.pth'),
        '--work-dir',
        str(tmp_path / 'test'),
        *options,
    )
    metrics = saved_test_metrics(str(tmp_path / 'test'))
    # COCO mAP lies in [0, 1]; -1 would mean no detections were scored.
    assert 0 <= metrics['coco/bbox_mAP'] <= 1
    assert 0 <= metrics['coco/segm_mAP'] <= 1

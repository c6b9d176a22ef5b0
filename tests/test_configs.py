import glob
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.runner import Runner

from slak_mm.models.backends import get_backend

from .helpers import REPO

CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if not p.startswith(osp.join(REPO, 'configs', '_base_', ''))
)
# Pieces that configs of several tasks share (a variable each, no model).
SHARED_BASES = sorted(glob.glob(osp.join(REPO, 'configs', '_base_', '*.py')))
TOOLKIT_CONFIGS = [c for c in CONFIGS if 'demo' not in c]


def test_every_config_on_disk_and_in_the_docs_is_tested():
    """The parametrized lists hold every config file under configs/ (full
    configs, plus the shared pieces in configs/_base_/), and every config
    that the README, the Makefile or docs/ name exists."""
    on_disk = sorted(
        osp.relpath(osp.join(folder, name), REPO)
        for folder, _, names in os.walk(osp.join(REPO, 'configs'))
        for name in names
        if name.endswith('.py')
    )
    shared = [osp.relpath(p, REPO) for p in SHARED_BASES]
    assert SHARED_BASES, 'configs/_base_/ holds no shared pieces'
    assert sorted(CONFIGS + shared) == on_disk
    docs = [osp.join(REPO, 'README.md'), osp.join(REPO, 'Makefile')]
    docs += glob.glob(osp.join(REPO, 'docs', '**', '*.md'), recursive=True)
    named = set()
    for doc in docs:
        with open(doc) as f:
            named.update(re.findall(r'configs/[\w/.-]+?\.py', f.read()))
    missing = sorted(named - set(CONFIGS) - set(shared))
    assert not missing, f'named in the docs but not on disk: {missing}'
    # The full-size config of every task the README documents.
    assert {
        'configs/classification/slak_t_in1k.py',
        'configs/detection/cascade_mask_rcnn_slak_t_fpn_3x_coco.py',
        'configs/segmentation/upernet_slak_t_ade20k.py',
    } <= named


@pytest.mark.parametrize('base', SHARED_BASES, ids=osp.basename)
def test_shared_bases_are_inherited(base):
    (name,) = Config.fromfile(base).keys()
    users = []
    for config in CONFIGS:
        with open(osp.join(REPO, config)) as f:
            if f'_base_.{name}' in f.read():
                users.append(config)
    assert users, f'no config takes _base_.{name}'
    for config in users:
        assert name in Config.fromfile(osp.join(REPO, config))


@pytest.mark.parametrize('config', CONFIGS)
def test_config_loads_and_builds(config, tmp_path):
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.custom_imports['imports'] == ['slak_mm']
    assert cfg.model.backbone.type == 'SLaK'
    # Pretrained files are user-provided; building must not need them.
    cfg.model.backbone.pop('init_cfg', None)
    cfg.work_dir = str(tmp_path)
    cfg.launcher = 'none'
    runner = Runner.from_cfg(cfg)
    # Exact resume (configs/_base_/exact_resume.py): generator states in
    # every checkpoint, checkpoints written atomically.
    hooks = {type(hook).__name__: hook for hook in runner.hooks}
    assert 'RNGStateHook' in hooks
    assert hooks['CheckpointHook'].backend_args == dict(backend='atomic_local')
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'SLaK'
    # Configs run the fast backend on CPU: channels-last maps, the custom
    # conv backward and oneDNN MLPs.
    assert {
        m.backend for m in backbone.modules() if hasattr(m, 'backend')
    } == {'auto'}
    assert get_backend(backbone.backend, torch.device('cpu')).name == 'fast'
    # SyncBN is reverted to BN on a single process.
    assert not any(
        isinstance(m, torch.nn.SyncBatchNorm) for m in runner.model.modules()
    )
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    n_params = sum(
        len(g['params']) for g in optim_wrapper.optimizer.param_groups
    )
    assert n_params == sum(
        1 for p in runner.model.parameters() if p.requires_grad
    )
    for scheduler in cfg.param_scheduler:
        default_args = dict(optimizer=optim_wrapper)
        if scheduler.get('convert_to_iter_based'):
            default_args['epoch_length'] = 100  # no dataset at hand
        PARAM_SCHEDULERS.build(scheduler, default_args=default_args)


def check_widths(cfg):
    """Head widths must follow the backbone widths."""
    from slak_mm.models import SLaK

    backbone = dict(cfg.model.backbone)
    backbone.pop('type')
    backbone.pop('init_cfg', None)
    channels = SLaK(
        **dict(backbone, kernel_sizes=(3, 3, 3, 3), small_kernel=3)
    ).channels
    if 'decode_head' in cfg.model:
        assert list(cfg.model.decode_head.in_channels) == channels
        assert cfg.model.auxiliary_head.in_channels == channels[2]
    elif 'neck' in cfg.model and cfg.model.neck:
        assert list(cfg.model.neck.in_channels) == channels
    else:
        assert cfg.model.head.in_channels == channels[-1]


@pytest.mark.parametrize('config', TOOLKIT_CONFIGS)
def test_head_widths_match_backbone(config):
    check_widths(Config.fromfile(osp.join(REPO, config)))


@pytest.mark.parametrize(
    'config, key, expected',
    [
        ('configs/segmentation/upernet_slak_t_ade20k.py', 'mIoU', None),
    ],
)
def test_segmentation_recipe(config, key, expected):
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        decay_rate=0.9, decay_type='stage_wise', num_layers=6
    )
    assert cfg.param_scheduler[0].end == 1500
    assert cfg.param_scheduler[1].end == 160000
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.model.backbone.drop_path_rate == 0.4
    assert cfg.model.test_cfg == dict(
        mode='slide', crop_size=(512, 512), stride=(341, 341)
    )
    assert (
        cfg.train_dataloader.batch_size * 8
        == cfg.auto_scale_lr['base_batch_size']
    )
    assert cfg.val_evaluator.iou_metrics == [key]


def test_detection_recipe():
    cfg = Config.fromfile(
        osp.join(
            REPO, 'configs/detection/cascade_mask_rcnn_slak_t_fpn_3x_coco.py'
        )
    )
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [27, 33]
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.optim_wrapper.paramwise_cfg.decay_rate == 0.7
    stds = [h.bbox_coder.target_stds for h in cfg.model.roi_head.bbox_head]
    assert stds == [
        [0.1, 0.1, 0.2, 0.2],
        [0.05, 0.05, 0.1, 0.1],
        [0.033, 0.033, 0.067, 0.067],
    ]
    assert all(
        h.loss_bbox.type == 'GIoULoss'
        and h.num_shared_convs == 4
        and h.num_shared_fcs == 1
        for h in cfg.model.roi_head.bbox_head
    )
    # DETR multi-scale: both resize branches use short sides 480..800.
    resize, crop = cfg.train_pipeline[3].transforms
    expected_scales = [(short, 1333) for short in range(480, 801, 32)]
    assert [tuple(s) for s in resize[0].scales] == expected_scales
    assert [tuple(s) for s in crop[2].scales] == expected_scales
    assert crop[1].crop_size == (384, 600)
    one_x = Config.fromfile(
        osp.join(
            REPO, 'configs/detection/cascade_mask_rcnn_slak_t_fpn_1x_coco.py'
        )
    )
    assert one_x.train_cfg.max_epochs == 12
    assert one_x.param_scheduler[1].milestones == [8, 11]


@pytest.mark.parametrize(
    'arch, drop_path, prune_rate, interval',
    [('t', 0.1, 0.5, 2000), ('s', 0.4, 0.3, 100), ('b', 0.5, 0.3, 100)],
)
def test_classification_recipe(arch, drop_path, prune_rate, interval):
    cfg = Config.fromfile(
        osp.join(REPO, f'configs/classification/slak_{arch}_in1k.py')
    )
    assert cfg.model.backbone.drop_path_rate == drop_path
    assert cfg.optim_wrapper.optimizer.lr == 4e-3
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    batch = (
        cfg.train_dataloader.batch_size
        * 8
        * (cfg.optim_wrapper.accumulative_counts)
    )
    assert batch == cfg.auto_scale_lr.base_batch_size == 4096
    assert cfg.train_cfg.max_epochs == 300
    assert any(h.type == 'EMAHook' for h in cfg.custom_hooks)
    augments = [a.type for a in cfg.model.train_cfg.augments]
    assert augments == ['Mixup', 'CutMix']
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandAugment' in pipeline and 'RandomErasing' in pipeline
    assert cfg.model.head.loss.label_smooth_val == 0.1
    (sparse,) = [h for h in cfg.custom_hooks if h.type == 'SparseTrainingHook']
    assert (sparse.sparsity, sparse.init, sparse.growth) == (
        0.4,
        'snip',
        'random',
    )
    assert (sparse.prune_rate, sparse.update_interval) == (
        prune_rate,
        interval,
    )
    assert sparse.module_path is None  # whole model, head included


@pytest.mark.parametrize(
    'config',
    [
        c
        for c in TOOLKIT_CONFIGS
        if c.startswith(('configs/segmentation', 'configs/detection'))
    ],
)
def test_fine_tuning_keeps_sparse_pattern(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    hooks = [h.type for h in cfg.custom_hooks]
    assert hooks[0] == 'StaticSparsityHook'
    # The own-dataset template also checks the annotation values.
    assert hooks[1:] in ([], ['SegLabelCheckHook'])
    assert 'SparseTrainingHook' not in hooks


@pytest.mark.parametrize(
    'config', [c for c in CONFIGS if c.startswith('configs/segmentation')]
)
def test_segmentation_evaluates_one_image_per_batch(config):
    """mmseg cannot batch images of different sizes for testing."""
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.val_dataloader.batch_size == 1
    assert cfg.test_dataloader.batch_size == 1


def test_erf_demo_config_builds_and_runs():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(osp.join(REPO, 'docs/erf_demo/slak_erf_demo.py'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'SLaK'
    with torch.no_grad():
        (feats,) = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, 256)

"""bf16 mixed-precision training on the CPU: the optimizer wrapper, the
``--amp`` switch, and sparse training under it."""

import itertools
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.runner import Runner
from torch.utils.data import DataLoader, Dataset

import slak_mm  # noqa: F401  registers SLaK, the hooks and the wrapper
from slak_mm.apis import enable_amp
from slak_mm.engine import CPUAmpOptimWrapper

from .conftest import TINY_ARCH

_run_names = itertools.count()


class Samples(Dataset):
    """Random uint8 images in mmpretrain's layout, 5 classes."""

    def __init__(self, length=8, size=32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(
            0, 256, (length, 3, size, size), generator=generator
        ).to(torch.uint8)
        self.labels = torch.randint(0, 5, (length,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        from mmpretrain.structures import DataSample

        sample = DataSample().set_gt_label(int(self.labels[index]))
        return dict(inputs=self.images[index], data_samples=sample)


def make_runner(work_dir, max_iters, load_from=None):
    from mmengine.dataset import pseudo_collate
    from mmpretrain.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    loader = DataLoader(Samples(), batch_size=2, collate_fn=pseudo_collate)
    return Runner(
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(
                type='ClsDataPreprocessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
            ),
            backbone=dict(
                type='SLaK',
                arch=TINY_ARCH,
                kernel_sizes=[13, 11, 9, 7],
                small_kernel=3,
                out_indices=3,
                gap_before_final_norm=True,
            ),
            head=dict(
                type='LinearClsHead',
                num_classes=5,
                in_channels=41,
                loss=dict(type='CrossEntropyLoss'),
            ),
        ),
        work_dir=str(work_dir),
        experiment_name=f'cpu_amp_{next(_run_names)}',
        default_scope='mmpretrain',
        train_dataloader=loader,
        optim_wrapper=dict(
            type='CPUAmpOptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-3),
        ),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
        ),
        log_processor=dict(by_epoch=False),
        custom_hooks=[
            dict(
                type='SparseTrainingHook',
                sparsity=0.4,
                init='uniform',
                prune_rate=0.5,
                update_interval=1,
            )
        ],
        randomness=dict(seed=0),
        load_from=load_from,
        resume=load_from is not None,
    )


def test_wrapper_is_in_the_root_registry_and_checks_dtype():
    assert OPTIM_WRAPPERS.get('CPUAmpOptimWrapper') is CPUAmpOptimWrapper
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="dtype must be one of.*'float16'"):
        CPUAmpOptimWrapper(dtype='float16', optimizer=optimizer)
    wrapper = CPUAmpOptimWrapper(optimizer=optimizer)
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu')
        assert model(torch.randn(3, 2)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')


def test_amp_flag_picks_the_cpu_wrapper_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=1))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    enable_amp(cfg)  # already enabled: unchanged
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    cfg = Config(dict(optim_wrapper=dict(type='ApexOptimWrapper')))
    with pytest.raises(ValueError, match='ApexOptimWrapper'):
        enable_amp(cfg)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=1))))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_sparse_training_in_bf16_keeps_zeros_and_resumes_exactly(tmp_path):
    runner = make_runner(tmp_path / 'full', max_iters=4)
    mlp_dtypes = []
    runner.model.backbone.stages[0][0].mlp.register_forward_hook(
        lambda module, inputs, output: mlp_dtypes.append(output.dtype)
    )
    runner.train()
    # The block MLPs ran in bf16; parameters and masks stayed fp32 / exact.
    assert set(mlp_dtypes) == {torch.bfloat16}
    hook = next(
        h for h in runner.hooks if type(h).__name__ == 'SparseTrainingHook'
    )
    assert hook.num_updates == 4
    weights = runner.model.state_dict()
    masks = hook.mask_state.masks
    assert 'stages.2.1.large_kernel.vertical.conv.weight' in masks
    for name, mask in masks.items():
        weight = weights['backbone.' + name]
        assert weight.dtype == torch.float32
        assert (weight[~mask] == 0).all(), name
        assert weight[mask].ne(0).any(), name

    resumed = make_runner(
        tmp_path / 'resumed',
        max_iters=4,
        load_from=str(tmp_path / 'full' / 'iter_2.pth'),
    )
    resumed.train()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_train_tool_amp_flag_trains_in_bf16_on_cpu(tmp_path):
    """``tools/train.py --amp`` on a machine without CUDA, end to end."""
    import os.path as osp
    import subprocess
    import sys

    from slak_mm.datasets import generate_ade20k

    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    data = generate_ade20k(
        tmp_path / 'data', num_train=4, num_val=2, image_size=64, num_classes=4
    )
    cfg = Config.fromfile(
        osp.join(
            repo, 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
        )
    )
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data['data_root']
    cfg.train_dataloader.batch_size = 2
    cfg.model.backbone.arch = dict(
        depths=[1, 1, 1, 1], channels=[8, 16, 24, 32]
    )
    cfg.model.decode_head.in_channels = [10, 20, 31, 41]
    cfg.model.auxiliary_head.in_channels = 31
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    config = str(tmp_path / 'seg.py')
    cfg.dump(config)
    # No CUDA for the tool, whatever this machine has.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(
        [sys.executable, 'tools/train.py', config, '--amp', '--work-dir',
         str(tmp_path / 'work')],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert 'bf16 CPU autocast (CPUAmpOptimWrapper)' in output
    assert 'Iter(train) [2/2]' in output
    saved = torch.load(
        tmp_path / 'work' / 'iter_2.pth', map_location='cpu', weights_only=True
    )
    weights = saved['state_dict']
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert weights['backbone.stages.0.0.pointwise_conv1.weight'].dtype == (
        torch.float32
    )

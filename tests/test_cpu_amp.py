"""bf16 mixed-precision training on the CPU: the optimizer wrapper, the
``--amp`` switch, and sparse training under it."""

import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import OPTIM_WRAPPERS
from torch.utils.data import DataLoader

import slak_mm  # noqa: F401  registers SLaK, the hooks and the wrapper
from slak_mm.apis import enable_amp
from slak_mm.engine import CPUAmpOptimWrapper

from .helpers import (
    ClassificationSamples,
    make_runner,
    run_command,
    saved_scalars,
    shrink_seg_config,
    sparse_hook,
    tiny_classifier_cfg,
)


def amp_runner(work_dir, max_iters, load_from=None):
    """A tiny SLaK classifier trained sparse under CPUAmpOptimWrapper."""
    from mmengine.dataset import pseudo_collate
    from mmpretrain.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    return make_runner(
        work_dir,
        [
            dict(
                type='SparseTrainingHook',
                sparsity=0.4,
                init='uniform',
                prune_rate=0.5,
                update_interval=1,
            )
        ],
        max_iters=max_iters,
        checkpoint_interval=2,
        model=tiny_classifier_cfg(),
        optim_wrapper=dict(
            type='CPUAmpOptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-3),
        ),
        loader=DataLoader(
            ClassificationSamples(), batch_size=2, collate_fn=pseudo_collate
        ),
        default_scope='mmpretrain',
        log_processor=dict(by_epoch=False),
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


# bf16 on oneDNN's kernels or on standard ops, per CPU.
@pytest.mark.cpu_capability
def test_sparse_training_in_bf16_keeps_zeros_and_resumes_exactly(tmp_path):
    runner = amp_runner(tmp_path / 'full', max_iters=4)
    mlp_dtypes = []
    runner.model.backbone.stages[0][0].mlp.register_forward_hook(
        lambda module, inputs, output: mlp_dtypes.append(output.dtype)
    )
    runner.train()
    # The block MLPs ran in bf16; parameters and masks stayed fp32 / exact.
    assert set(mlp_dtypes) == {torch.bfloat16}
    sparse = sparse_hook(runner).controller
    assert sparse.num_updates == 4
    weights = runner.model.state_dict()
    masks = sparse.mask_state.masks
    assert 'stages.2.1.large_kernel.vertical.conv.weight' in masks
    for name, mask in masks.items():
        weight = weights['backbone.' + name]
        assert weight.dtype == torch.float32
        assert (weight[~mask] == 0).all(), name
        assert weight[mask].ne(0).any(), name

    resumed = amp_runner(
        tmp_path / 'resumed',
        max_iters=4,
        load_from=str(tmp_path / 'full' / 'iter_2.pth'),
    )
    resumed.train()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, weights[key]), key


@pytest.mark.cpu_capability
def test_train_tool_amp_flag_trains_in_bf16_on_cpu(tmp_path):
    """``tools/train.py --amp`` on a machine without CUDA, end to end."""
    import sys

    from slak_mm.datasets import generate_ade20k

    from .helpers import REPO

    data = generate_ade20k(
        tmp_path / 'data', num_train=4, num_val=2, image_size=64, num_classes=4
    )
    cfg = Config.fromfile(
        os.path.join(
            REPO, 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
        )
    )
    shrink_seg_config(cfg, data['data_root'], max_iters=2)
    config = str(tmp_path / 'seg.py')
    cfg.dump(config)
    # No CUDA for the tool, whatever this machine has.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    output = run_command(
        [sys.executable, 'tools/train.py', config, '--amp', '--work-dir',
         str(tmp_path / 'work')],
        env=env,
    )  # fmt: skip
    assert 'bf16 CPU autocast (CPUAmpOptimWrapper)' in output
    train, _ = saved_scalars(str(tmp_path / 'work'))
    assert sorted(train) == [1, 2]
    saved = torch.load(
        tmp_path / 'work' / 'iter_2.pth', map_location='cpu', weights_only=True
    )
    weights = saved['state_dict']
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert weights['backbone.stages.0.0.pointwise_conv1.weight'].dtype == (
        torch.float32
    )

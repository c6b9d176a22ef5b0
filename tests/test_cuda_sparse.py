"""Sparse training pieces on CUDA tensors (``pytest -m cuda``).

Skipped without a GPU. Imports only torch, mmengine and slak_mm's model
and sparse packages (the GPU check's machine has no mmcv / mmdet / mmseg
/ mmpretrain).

- Mask updates on CUDA: masks stay on the weights' device, and for one
  seed the CUDA masks equal the CPU masks update after update (the random
  draws come from seeded CPU generators).
- SyncBN in a one-process NCCL group: SLaK built with
  ``norm_cfg=dict(type='SyncBN')`` (and a BN model converted with
  ``nn.SyncBatchNorm.convert_sync_batchnorm``) under DDP, a train-mode
  forward and backward equal to the BN model's, with the sparse controller
  broadcasting its masks over the group. With one process torch runs
  SyncBN's local statistics; the cross-process reduction itself is checked
  separately by calling torch's SyncBN autograd function on the group.
"""

import copy

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from slak_mm.models import SLaK
from slak_mm.sparse import DynamicSparsity

from .helpers import TINY_ARCH, randomize_batch_norms, relative_close

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason='needs a CUDA GPU'
    ),
]


def tiny_slak(norm_type='BN'):
    model = SLaK(
        arch=TINY_ARCH,
        out_indices=(0, 1, 2, 3),
        layer_scale_init_value=1.0,
        norm_cfg=dict(type=norm_type),
    )
    randomize_batch_norms(model)
    return model


def controller(model, **kwargs):
    settings = dict(
        sparsity=0.5,
        init='erk',
        growth='random',
        prune_rate=0.5,
        update_interval=1,
        total_steps=10,
        seed=3,
    )
    settings.update(kwargs)
    return DynamicSparsity(model, **settings)


def test_mask_updates_on_cuda_match_cpu_for_a_seed():
    cpu_model = tiny_slak()
    cuda_model = copy.deepcopy(cpu_model).cuda()
    runs = []
    for model in (cpu_model, cuda_model):
        sparse = controller(model)
        sparse.build_masks()
        # lr=0 and no gradients: the step changes nothing but the masks.
        sparse.bind(torch.optim.SGD(model.parameters(), lr=0.0))
        runs.append(sparse)
    cpu, cuda = runs
    assert len(cuda.mask_state) > 0
    generator = torch.Generator().manual_seed(1)
    for update in range(3):
        # Fresh, identical weights on both devices (distinct magnitudes,
        # so magnitude pruning has no ties to break differently).
        values = {
            name: torch.randn(param.shape, generator=generator)
            for name, param in cpu.mask_state.params.items()
        }
        for sparse in runs:
            with torch.no_grad():
                for name, param in sparse.mask_state.params.items():
                    param.copy_(values[name])
            sparse.optimizer.step()
            sparse.step()
        assert cpu.num_updates == cuda.num_updates == update + 1
        for name, cuda_mask in cuda.mask_state.masks.items():
            param = cuda.mask_state.params[name]
            assert cuda_mask.device == param.device, name
            assert param.device.type == 'cuda', name
            assert torch.equal(cuda_mask.cpu(), cpu.mask_state.masks[name])
            assert bool((param[~cuda_mask] == 0).all()), name
    # The CUDA run's state (CPU masks) restores onto a CPU model.
    state = cuda.state_dict()
    assert all(m.device.type == 'cpu' for m in state['masks'].values())
    restored = controller(tiny_slak())
    restored.load_state_dict(state)
    for name, mask in restored.mask_state.masks.items():
        assert torch.equal(mask, cpu.mask_state.masks[name]), name


@pytest.fixture
def nccl_group(tmp_path):
    if not dist.is_available() or not dist.is_nccl_available():
        pytest.fail('torch.distributed with NCCL is needed on a CUDA build')
    torch.cuda.set_device(0)
    dist.init_process_group(
        'nccl',
        init_method=f'file://{tmp_path / "rendezvous"}',
        rank=0,
        world_size=1,
    )
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('build', ['norm_cfg', 'convert'])
def test_sync_bn_slak_trains_in_a_one_process_nccl_group(nccl_group, build):
    reference = tiny_slak('BN').cuda().train()
    if build == 'norm_cfg':
        model = tiny_slak('SyncBN')
        model.load_state_dict(reference.state_dict())
    else:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(
            copy.deepcopy(reference)
        )
    model = model.cuda().train()
    sync_bns = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(sync_bns) == len(
        [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    )
    assert len(sync_bns) > 0
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[0])

    # The sparse controller under the group: masks broadcast over NCCL.
    sparse = controller(model, growth='gradient')
    masks = sparse.build_masks().masks
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sparse.bind(optimizer)
    assert all(m.device.type == 'cuda' for m in masks.values())
    reference_sparse = controller(reference, growth='gradient')
    reference_sparse.build_masks()
    for name, mask in reference_sparse.mask_state.masks.items():
        assert torch.equal(mask, masks[name]), name
    reference_optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.01, momentum=0.9
    )
    reference_sparse.bind(reference_optimizer)

    images = torch.randn(4, 3, 32, 32, device='cuda')
    for _ in range(2):
        losses = []
        for net, opt, ctl in (
            (ddp, optimizer, sparse),
            (reference, reference_optimizer, reference_sparse),
        ):
            opt.zero_grad()
            outs = net(images)
            loss = sum(out.float().pow(2).mean() for out in outs)
            loss.backward()
            losses.append(loss.detach())
            opt.step()
            ctl.step()
        relative_close(losses[0], losses[1], rtol=1e-4)
    # Running statistics moved like BN's; weights and masks stayed in step.
    for sync_bn, bn in zip(
        sync_bns,
        [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)],
    ):
        relative_close(sync_bn.running_var, bn.running_var, rtol=1e-4)
    assert sparse.num_updates == reference_sparse.num_updates == 2
    for name, mask in sparse.mask_state.masks.items():
        param = sparse.mask_state.params[name]
        assert mask.device == param.device, name
        assert bool((param[~mask] == 0).all()), name

    # bf16 autocast through the SyncBN model: finite output and gradients.
    optimizer.zero_grad()
    with torch.autocast('cuda', dtype=torch.bfloat16):
        outs = ddp(images)
    sum(out.float().mean() for out in outs).backward()
    assert all(torch.isfinite(out).all() for out in outs)
    assert all(
        torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.grad is not None
    )


def test_sync_bn_reduction_over_the_nccl_group_matches_batch_norm(
    nccl_group,
):
    """torch's SyncBN autograd function (what SyncBatchNorm runs with more
    than one process) on a SLaK-shaped map, forward and backward, over the
    one-process NCCL group: the all-gather of statistics and the
    all-reduce of gradients run on the group."""
    from torch.nn.modules._functions import SyncBatchNorm as SyncBNFunction

    x = torch.randn(4, 41, 8, 8, device='cuda', requires_grad=True)
    weight = torch.rand(41, device='cuda', requires_grad=True)
    bias = torch.randn(41, device='cuda', requires_grad=True)
    grad_out = torch.randn(4, 41, 8, 8, device='cuda')
    results = []
    for synced in (True, False):
        running_mean = torch.zeros(41, device='cuda')
        running_var = torch.ones(41, device='cuda')
        inputs = [
            t.detach().clone().requires_grad_() for t in (x, weight, bias)
        ]
        if synced:
            out = SyncBNFunction.apply(
                inputs[0], inputs[1], inputs[2], running_mean, running_var,
                1e-5, 0.1, nccl_group, 1,
            )  # fmt: skip
        else:
            out = F.batch_norm(
                inputs[0], running_mean, running_var, inputs[1], inputs[2],
                True, 0.1, 1e-5,
            )  # fmt: skip
        out.backward(grad_out)
        results.append([out, running_var] + [t.grad for t in inputs])
    for synced, local in zip(*results):
        relative_close(synced, local, rtol=1e-5)

"""Sparse training under mmengine's ``AmpOptimWrapper`` (loss scaling).

An optimizer step that the loss scaler skips (inf gradients) must not
count as a sparse step: no mask update, unchanged counters and weights.
Masked weights stay exactly zero in the fp32 master weights, and a resumed
run continues like the uninterrupted one.

The same runs go through a minimal mmengine ``Runner`` (a ``BaseModel``
around SLaK, no mmcv / mmdet / mmseg / mmpretrain, which the GPU machine
does not have) on three devices and precisions:

- ``cpu-fp16``: ``AmpOptimWrapper``'s own ``backward`` / ``step`` /
  ``state_dict`` code on CPU, with ``torch.amp.GradScaler('cpu')`` and
  fp16 CPU autocast (mmengine refuses to build the wrapper without an
  accelerator and its ``autocast`` allows only bf16 on CPU, so the test
  wrapper below swaps in those two pieces);
- ``cuda-fp16`` and ``cuda-bf16`` (``pytest -m cuda``, skipped without a
  GPU): the unmodified ``AmpOptimWrapper``.
"""

from contextlib import contextmanager
from functools import partial
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper
from torch.utils.data import DataLoader, Dataset

import slak_mm  # noqa: F401  registers SLaK and the sparse hooks
from slak_mm.engine.hooks import SparseTrainingHook
from slak_mm.models import SLaK

from .helpers import TINY_ARCH, make_runner, sparse_hook

# Iteration (0-based) whose gradients are made inf, so the scaler skips it.
INF_ITER = 1
MAX_ITERS = 4
# Small enough that real fp16 gradients never overflow in these few steps
# (the default 2**16 may), so the forced iteration is the only skip.
INIT_SCALE = 2.0**8

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU'
)
SETTINGS = [
    # fp16 on oneDNN's kernels (AVX512-FP16) or on standard ops, per CPU.
    pytest.param(
        'cpu', 'float16', id='cpu-fp16', marks=pytest.mark.cpu_capability
    ),
    pytest.param(
        'cuda',
        'float16',
        id='cuda-fp16',
        marks=[pytest.mark.cuda, requires_cuda],
    ),
    pytest.param(
        'cuda',
        'bfloat16',
        id='cuda-bf16',
        marks=[pytest.mark.cuda, requires_cuda],
    ),
]


class CPUFloat16AmpOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` on CPU: fp16 autocast, ``GradScaler('cpu')``.

    Everything else (scaled backward, the scaler's step and update, the
    ``loss_scaler`` entry of the state dict) is the parent's code.
    """

    def __init__(self, **kwargs) -> None:
        with (
            mock.patch.object(
                amp_optimizer_wrapper, 'is_cuda_available', lambda: True
            ),
            mock.patch.object(
                amp_optimizer_wrapper,
                'GradScaler',
                partial(torch.amp.GradScaler, 'cpu'),
            ),
        ):
            super().__init__(dtype='float16', **kwargs)

    @contextmanager
    def optim_context(self, model: nn.Module):
        with (
            OptimWrapper.optim_context(self, model),
            torch.autocast('cpu', dtype=torch.float16),
        ):
            yield


class Samples(Dataset):
    """Fixed random 32 x 32 images with 5 classes (no shuffling needed)."""

    def __init__(self, length: int = 8) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(length, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, 5, (length,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index], labels=self.labels[index])


class TinyClassifier(BaseModel):
    """The narrow SLaK of the tests with a linear head, mm*-toolkit free.

    SLaK-T's kernel sizes on 32 x 32 images (cropped to the maps), the
    shapes the other CUDA tests use, so the GPU check autotunes few new
    Triton shapes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = SLaK(
            arch=TINY_ARCH,
            out_indices=3,
            gap_before_final_norm=True,
        )
        self.head = nn.Linear(41, 5)
        self.mlp_dtypes = set()
        self.backbone.stages[0][0].mlp.register_forward_hook(
            lambda module, inputs, output: self.mlp_dtypes.add(output.dtype)
        )

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1])
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits.float(), labels))
        return logits


class InfGradientAt(Hook):
    """Makes the head's weight gradient inf at one iteration."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        self._handle = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.iteration:
            self._handle = runner.model.head.weight.register_hook(
                lambda grad: torch.full_like(grad, float('inf'))
            )

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class Recorder(Hook):
    """After the sparse hook: counters, masks, a weight and the scale."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.records = []

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ):
        sparse = next(
            h for h in runner.hooks if isinstance(h, SparseTrainingHook)
        ).controller
        self.records.append(
            dict(
                iter=runner.iter,
                steps=sparse.optimizer_steps,
                updates=sparse.num_updates,
                masks={
                    n: m.clone() for n, m in sparse.mask_state.masks.items()
                },
                head=runner.model.head.weight.detach().clone(),
                scale=runner.optim_wrapper.loss_scaler.get_scale(),
            )
        )


def build_amp_runner(work_dir, device, dtype, load_from=None):
    """The toy runner of :func:`tests.helpers.make_runner` around
    :class:`TinyClassifier` on ``device`` under an fp16/bf16 AMP wrapper,
    with the sparse hook, the forced inf gradient and a :class:`Recorder`."""
    model = TinyClassifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_scale = dict(init_scale=INIT_SCALE, growth_interval=1000)
    if device == 'cpu':
        wrapper = CPUFloat16AmpOptimWrapper(
            optimizer=optimizer, loss_scale=loss_scale
        )
    else:
        wrapper = AmpOptimWrapper(
            optimizer=optimizer, loss_scale=loss_scale, dtype=dtype
        )
    recorder = Recorder()
    runner = make_runner(
        work_dir,
        [
            dict(
                type='SparseTrainingHook',
                sparsity=0.5,
                init='uniform',
                growth='gradient',
                prune_rate=0.5,
                update_interval=1,
            ),
            InfGradientAt(INF_ITER),
            recorder,
        ],
        max_iters=MAX_ITERS,
        checkpoint_interval=2,
        model=model,
        optim_wrapper=wrapper,
        loader=DataLoader(Samples(), batch_size=2),
        log_processor=dict(by_epoch=False),
        load_from=load_from,
        resume=load_from is not None,
    )
    return runner, recorder


@contextmanager
def deterministic_cudnn(device):
    """cuDNN's deterministic algorithms on CUDA (a resume compares runs)."""
    if device != 'cuda':
        yield
        return
    before = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = before


@pytest.mark.parametrize('device, dtype', SETTINGS)
def test_skipped_amp_step_is_not_a_sparse_step(tmp_path, device, dtype):
    with deterministic_cudnn(device):
        runner, recorder = build_amp_runner(tmp_path / 'full', device, dtype)
        runner.train()
    records = recorder.records
    assert [r['iter'] for r in records] == list(range(MAX_ITERS))
    # The autocast dtype reached the backbone.
    assert runner.model.mlp_dtypes == {getattr(torch, dtype)}

    # Only the forced iteration was skipped: the scale halved there only.
    scales = [INIT_SCALE] + [r['scale'] for r in records]
    halved = [i for i in range(MAX_ITERS) if scales[i + 1] < scales[i]]
    assert halved == [INF_ITER]
    assert scales[INF_ITER + 1] == INIT_SCALE / 2

    # Counted steps and updates: one per iteration except the skipped one.
    expected = [i if i <= INF_ITER else i - 1 for i in range(1, MAX_ITERS + 1)]
    assert [r['steps'] for r in records] == expected
    assert [r['updates'] for r in records] == expected
    skipped, before = records[INF_ITER], records[INF_ITER - 1]
    assert torch.equal(skipped['head'], before['head'])  # no step taken
    for name, mask in skipped['masks'].items():
        assert torch.equal(mask, before['masks'][name]), name
    # The other steps did update the masks.
    after = records[INF_ITER + 1]
    assert any(
        not torch.equal(after['masks'][n], m)
        for n, m in skipped['masks'].items()
    )

    # fp32 master weights, exactly zero where masked, on the device.
    sparse = sparse_hook(runner).controller
    weights = dict(runner.model.backbone.named_parameters())
    assert 'stages.2.1.large_kernel.vertical.conv.weight' in (
        sparse.mask_state.masks
    )
    for name, mask in sparse.mask_state.masks.items():
        weight = weights[name]
        assert weight.dtype == torch.float32, name
        assert mask.device == weight.device, name
        assert weight.device.type == device, name
        assert bool((weight[~mask] == 0).all()), name
        assert bool(weight[mask].ne(0).any()), name

    # Resumed after iteration 2 (the skip is before it): same end state.
    checkpoint = torch.load(
        tmp_path / 'full' / 'iter_2.pth', map_location='cpu', weights_only=True
    )
    assert checkpoint['sparse_training']['optimizer_steps'] == 1
    assert checkpoint['optimizer']['loss_scaler']['scale'] == (INIT_SCALE / 2)
    with deterministic_cudnn(device):
        resumed, resumed_recorder = build_amp_runner(
            tmp_path / 'resumed',
            device,
            dtype,
            load_from=str(tmp_path / 'full' / 'iter_2.pth'),
        )
        resumed.train()
    end, resumed_end = records[-1], resumed_recorder.records[-1]
    for key in ('iter', 'steps', 'updates', 'scale'):
        assert resumed_end[key] == end[key], key
    for name, mask in end['masks'].items():
        assert torch.equal(resumed_end['masks'][name], mask), name
    final = runner.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        if device == 'cpu':
            assert torch.equal(value, final[key]), key
        else:  # cuBLAS / BN reductions need not be bitwise repeatable
            torch.testing.assert_close(value, final[key], msg=key)

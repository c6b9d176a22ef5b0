"""Helpers shared by the test modules: the repository's path, small SLaK
settings, a toy model and Runner for the training hooks, tiny configs,
release-format checkpoints and running the repository's scripts.

Plain functions and constants, imported as ``from .helpers import ...``;
``conftest.py`` keeps the fixtures that set up or tear down state."""

import argparse
import glob
import itertools
import json
import math
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader, Dataset

from slak_mm.ops import triton_dwconv

# The repository's root folder.
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Stage kernels and the small kernel of the released SLaK-T.
KERNELS = (13, 11, 9, 7)
SMALL = 3
# A narrow SLaK with real large kernels, fast enough for CPU tests.
TINY_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 24, 32])
# A one-block-per-stage SLaK for the toolkits' detectors and segmentors,
# and its stage widths after the default width factor 1.3.
ONE_BLOCK_ARCH = dict(depths=[1, 1, 1, 1], channels=[8, 16, 24, 32])
TINY_WIDTHS = [int(c * 1.3) for c in ONE_BLOCK_ARCH['channels']]
CLS_MEAN = [123.675, 116.28, 103.53]
CLS_STD = [58.395, 57.12, 57.375]
# Marks CUDA tests of the Triton kernels (with ``pytest.mark.cuda``).
REQUIRES_TRITON_CUDA = pytest.mark.skipif(
    triton_dwconv.triton is None or not torch.cuda.is_available(),
    reason='needs Triton and a CUDA GPU',
)
# What `make test-avx2` sets to run the cpu_capability tests as an AVX2-only
# CPU would: oneDNN and ATen both stop below AVX-512 (no bf16/fp16 kernels).
AVX2_CAPS = {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'ATEN_CPU_CAPABILITY': 'avx2'}


def randomize_batch_norms(model: torch.nn.Module) -> None:
    """Gives every BN non-trivial statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            channels = module.num_features
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            assert module.weight.shape == (channels,)


class _LaunchRecorder:
    """Stands in for a Triton kernel: ``kernel[grid](...)`` records the
    launch's flags (upper-case keyword arguments, less the tile sizes)
    under ``name``, then launches the kernel."""

    def __init__(self, name, kernel, launches):
        self.name, self.kernel, self.launches = name, kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            flags = {
                key: value
                for key, value in kwargs.items()
                if key.isupper() and not key.startswith('BLOCK_')
            }
            self.launches.append((self.name, flags))
            return self.kernel[grid](*args, **kwargs)

        return launch


def record_kernel_launches(monkeypatch):
    """Records every launch of the Triton depthwise-conv kernels (the
    kernels ``triton_dwconv._kernels`` returns, interpreted or compiled)
    as ``(name, flags)``, name ``'forward'``, ``'weight_grad'`` or
    ``'strip_forward'``; returns the list they are appended to."""
    launches = []
    built = triton_dwconv._kernels
    names = ('forward', 'weight_grad', 'strip_forward')

    def recorded(interpret):
        return tuple(
            _LaunchRecorder(name, kernel, launches)
            for name, kernel in zip(names, built(interpret))
        )

    monkeypatch.setattr(triton_dwconv, '_kernels', recorded)
    return launches


def relative_close(actual, expected, rtol=1e-5):
    """Max error relative to the largest magnitude of the expectation."""
    scale = expected.abs().max().clamp_min(1e-12)
    error = (actual.double() - expected.double()).abs().max() / scale
    assert error <= rtol, f'relative error {error:.3g} > {rtol}'


def run_module(module, x, grad_out, backend=None):
    """Returns the output and the gradients of input and parameters;
    ``backend`` is passed to the forward of a block or large-kernel module
    (their own default, ``'auto'``, when None)."""
    x = x.clone().requires_grad_(True)
    out = module(x) if backend is None else module(x, backend)
    out.backward(grad_out)
    grads = {'input': x.grad}
    grads.update(
        {
            name: p.grad
            for name, p in module.named_parameters()
            if p.requires_grad
        }
    )
    return out, grads


def cpu_backends(include_reference: bool = False):
    """Names of the ``backend`` choices that run on this machine's CPU
    (``'auto'`` included); without ``include_reference`` only those that
    compute their own way rather than running the modules as defined."""
    from slak_mm.models.backends import backend_names, get_backend

    names = []
    for name in backend_names():
        try:
            backend = get_backend(name, 'cpu')
        except (ValueError, RuntimeError):
            continue  # a backend for another device, or not built here
        if backend.device_types is not None and 'cpu' not in (
            backend.device_types
        ):
            # Runs on CPU only on request (GPU kernels under an
            # interpreter, e.g. with TRITON_INTERPRET=1 set): too slow for
            # these tests; tests/test_triton_backend.py covers it.
            continue
        if include_reference or not backend.runs_modules_as_defined:
            names.append(name)
    return names


class ToyClassifier(BaseModel):
    """A two-conv, one-linear backbone and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 16),
        )
        self.head = nn.Linear(16, 4)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


class ToyDataset(Dataset):
    """Fixed random 3x8x8 images with 4 classes.

    Args:
        length (int): Number of samples.
        seed (int): Seed of the data.
        inf_samples (Sequence[int]): Samples whose image is all inf.
    """

    def __init__(self, length=48, seed=0, inf_samples=()) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(length, 3, 8, 8, generator=generator)
        self.labels = torch.randint(0, 4, (length,), generator=generator)
        for index in inf_samples:
            self.images[index] = math.inf

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return dict(inputs=self.images[index], labels=self.labels[index])


def toy_model(seed=0):
    """A :class:`ToyClassifier` initialised from ``seed``."""
    torch.manual_seed(seed)
    return ToyClassifier()


# Distinct experiment names for Runners built in the same second.
_run_names = itertools.count()


def make_runner(
    work_dir,
    custom_hooks,
    max_iters=12,
    accumulative_counts=1,
    checkpoint_interval=6,
    dataset=None,
    model=None,
    optim_wrapper=None,
    randomness=None,
    loader=None,
    **kwargs,
):
    """A Runner over the toy model and data; no shuffling, so a resumed run
    sees the same batches as an uninterrupted one."""
    if optim_wrapper is None:
        optim_wrapper = dict(
            optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05),
            accumulative_counts=accumulative_counts,
        )
    if loader is None:
        loader = DataLoader(
            dataset or ToyDataset(), batch_size=4, shuffle=False
        )
    return Runner(
        model=model or toy_model(),
        work_dir=str(work_dir),
        experiment_name=f'toy_run_{next(_run_names)}',
        train_dataloader=loader,
        optim_wrapper=optim_wrapper,
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook',
                interval=checkpoint_interval,
                by_epoch=False,
            ),
            logger=dict(type='LoggerHook', interval=1),
        ),
        custom_hooks=custom_hooks,
        randomness=randomness or dict(seed=0),
        **kwargs,
    )


def sparse_hook(runner):
    """The runner's SparseTrainingHook (or StaticSparsityHook)."""
    from slak_mm.engine.hooks import SparseTrainingHook

    return next(h for h in runner.hooks if isinstance(h, SparseTrainingHook))


def assert_masked_zero(weights, masks, prefix='backbone.'):
    """Asserts every weight outside its mask is exactly zero."""
    for name, mask in masks.items():
        weight = weights[prefix + name]
        assert (weight[~mask.to(weight.device)] == 0).all(), name


class ClassificationSamples(Dataset):
    """Random uint8 images in mmpretrain's ``inputs`` / ``data_samples``
    layout, 5 classes."""

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


def tiny_classifier_cfg(loss=None, preprocessor=None, **backbone):
    """An mmpretrain ImageClassifier config (5 classes) over a
    :data:`TINY_ARCH` SLaK; ``backbone`` entries override the SLaK's."""
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(
            type='ClsDataPreprocessor',
            mean=CLS_MEAN,
            std=CLS_STD,
            **(preprocessor or {}),
        ),
        backbone=dict(
            type='SLaK',
            arch=TINY_ARCH,
            kernel_sizes=list(KERNELS),
            small_kernel=SMALL,
            out_indices=3,
            gap_before_final_norm=True,
            **backbone,
        ),
        head=dict(
            type='LinearClsHead',
            num_classes=5,
            in_channels=41,
            loss=loss or dict(type='CrossEntropyLoss'),
        ),
    )


def release_state_dict(depths, dims, kernels, small, num_classes=10):
    """Random weights laid out as a released SLaK ImageNet model.

    Written from the documented release format, independently of the
    package's own naming.
    """
    sd = OrderedDict()

    def ln(prefix, c):
        sd[f'{prefix}.weight'] = torch.randn(c)
        sd[f'{prefix}.bias'] = torch.randn(c)

    def conv_bn(prefix, c, kh, kw):
        sd[f'{prefix}.conv.weight'] = torch.randn(c, 1, kh, kw)
        sd[f'{prefix}.bn.weight'] = torch.randn(c)
        sd[f'{prefix}.bn.bias'] = torch.randn(c)
        sd[f'{prefix}.bn.running_mean'] = torch.randn(c)
        sd[f'{prefix}.bn.running_var'] = torch.rand(c) + 0.5
        sd[f'{prefix}.bn.num_batches_tracked'] = torch.tensor(7)

    sd['downsample_layers.0.0.weight'] = torch.randn(dims[0], 3, 4, 4)
    sd['downsample_layers.0.0.bias'] = torch.randn(dims[0])
    ln('downsample_layers.0.1', dims[0])
    for i in range(1, 4):
        ln(f'downsample_layers.{i}.0', dims[i - 1])
        sd[f'downsample_layers.{i}.1.weight'] = torch.randn(
            dims[i], dims[i - 1], 2, 2
        )
        sd[f'downsample_layers.{i}.1.bias'] = torch.randn(dims[i])
    for i, depth in enumerate(depths):
        c, k = dims[i], kernels[i]
        for j in range(depth):
            p = f'stages.{i}.{j}'
            conv_bn(f'{p}.large_kernel.LoRA1', c, k, small)
            conv_bn(f'{p}.large_kernel.LoRA2', c, small, k)
            conv_bn(f'{p}.large_kernel.small_conv', c, small, small)
            ln(f'{p}.norm', c)
            sd[f'{p}.pwconv1.weight'] = torch.randn(4 * c, c)
            sd[f'{p}.pwconv1.bias'] = torch.randn(4 * c)
            sd[f'{p}.pwconv2.weight'] = torch.randn(c, 4 * c)
            sd[f'{p}.pwconv2.bias'] = torch.randn(c)
            sd[f'{p}.gamma'] = torch.randn(c)
    ln('norm', dims[3])
    sd['head.weight'] = torch.randn(num_classes, dims[3])
    sd['head.bias'] = torch.randn(num_classes)
    return sd


def save_release(path, state_dict):
    """Saves ``state_dict`` as the release's training script saved a
    SLaK-T checkpoint (``model``, ``optimizer``, ``epoch``, ``args``)."""
    torch.save(
        dict(
            model=state_dict,
            optimizer=dict(state={}, param_groups=[]),
            epoch=299,
            args=argparse.Namespace(
                model='SLaK_tiny',
                kernel_size=[*KERNELS, SMALL],
                sparsity=0.4,
                width_factor=1.3,
                Decom=True,
            ),
        ),
        path,
    )


def narrow_cascade_heads(model, channels=32, proposals=100):
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


def shrink_det_config(cfg, backbone, num_classes=3):
    """Shrinks a Cascade Mask R-CNN config to ``num_classes`` classes, the
    SLaK settings ``backbone`` (BN, :data:`TINY_WIDTHS` wide) and narrow
    heads that keep every detection."""
    cfg.model.backbone.update(backbone)
    cfg.model.neck.in_channels = TINY_WIDTHS
    for head in cfg.model.roi_head.bbox_head:
        head.num_classes = num_classes
        head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.roi_head.mask_head.num_classes = num_classes
    narrow_cascade_heads(cfg.model)
    # After a few iterations every score is below the default 0.05.
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    return cfg


def run_command(command, env=None, timeout=900):
    """Runs ``command`` (a list) in the repository; asserts it exits 0 and
    returns its stdout + stderr."""
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


def shrink_seg_config(cfg, data_root, max_iters):
    """Points the demo UperNet config at generated ADE20K-style data under
    ``data_root`` and shrinks it to a one-block SLaK and ``max_iters``
    iterations, validating and checkpointing at the end."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.train_dataloader.batch_size = 2
    cfg.model.backbone.arch = ONE_BLOCK_ARCH
    cfg.model.decode_head.in_channels = TINY_WIDTHS
    cfg.model.auxiliary_head.in_channels = TINY_WIDTHS[2]
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.logger.interval = 1
    return cfg


def saved_scalars(work_dir):
    """The records of the run's ``vis_data/scalars.json``: (train records
    by step, validation records)."""
    (path,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        records = [json.loads(line) for line in f]
    train = {r['step']: r for r in records if 'loss' in r}
    val = [r for r in records if 'loss' not in r and 'lr' not in r]
    return train, val


def saved_test_metrics(work_dir):
    """The metrics ``tools/test.py`` dumped to ``<timestamp>.json``."""
    (path,) = glob.glob(osp.join(work_dir, '*', '*.json'))
    with open(path) as f:
        return json.load(f)


def run_tool(*args):
    """Runs ``python *args`` (a script of the repository and its
    arguments) in the repository; see :func:`run_command`."""
    return run_command([sys.executable, *args])

"""Sparse training against the release's rules (VITA-Group/SLaK).

Each test re-implements the release's rule here, from its
``sparse_core.py``, ``funcs.py``, ``model_sema.py`` and ``main.py``,
without importing ours, runs ours on the same weights, gradients and
optimizer state, and compares: exactly where the release is deterministic,
by the mean over draws where it draws at random.
"""

import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from slak_mm.models import SLaK
from slak_mm.models.checkpoint import slak_mm_to_release_key
from slak_mm.sparse import (
    MaskState,
    cosine_prune_rate,
    initial_masks,
    prune_and_regrow,
    seeded_generator,
    select_maskable_parameters,
    snip_densities,
)
from slak_mm.sparse.update import growth_scores

from .helpers import (
    ClassificationSamples,
    make_runner,
    sparse_hook,
    tiny_classifier_cfg,
)

# ----------------------------------------------------------------------
# The release's rules, written from its source
# ----------------------------------------------------------------------


def release_apply_mask(params, masks, optimizer):
    """``Masking.apply_mask``: weights times mask, and SGD's momentum."""
    with torch.no_grad():
        for name, param in params.items():
            if name not in masks:
                continue
            mask = masks[name].float()
            param.data = param.data * mask
            state = optimizer.state[param]
            if 'momentum_buffer' in state:
                state['momentum_buffer'] = state['momentum_buffer'] * mask


def release_momentum(optimizer, param):
    """``Masking.get_momentum_for_weight``."""
    state = optimizer.state[param]
    if 'exp_avg' in state:
        return state['exp_avg'] / (torch.sqrt(state['exp_avg_sq']) + 1e-08)
    return state['momentum_buffer']


def release_truncate(params, masks, prune_rate, growth, optimizer=None):
    """``Masking.truncate_weights`` with ``magnitude_prune`` and
    ``gradient_growth`` / ``momentum_growth`` (deterministic modes), on
    float masks; the release calls ``apply_mask`` right before it."""
    removed = {}
    for name, weight in params.items():
        if name not in masks:
            continue
        mask = masks[name]
        nonzeros = mask.sum().item()
        zeros = mask.numel() - nonzeros
        num_remove = math.ceil(prune_rate * nonzeros)
        k = math.ceil(zeros + num_remove)
        _, idx = torch.sort(torch.abs(weight.data.view(-1)))
        mask.data.view(-1)[idx[:k]] = 0.0
        removed[name] = nonzeros - mask.sum().item()
    for name, weight in params.items():
        if name not in masks:
            continue
        new_mask = masks[name].data.byte()
        if growth == 'gradient':
            score = weight.grad.clone()
        else:
            score = release_momentum(optimizer, weight)
        score = score * (new_mask == 0).float()
        _, idx = torch.sort(torch.abs(score).flatten(), descending=True)
        new_mask.data.view(-1)[idx[: math.floor(removed[name])]] = 1.0
        masks[name][:] = new_mask.float()
    release_apply_mask(params, masks, optimizer)


def release_snip_layer_sparsities(scores, keep_ratio):
    """The threshold part of ``SNIP``: per-layer sparsity."""
    all_scores = torch.cat([torch.flatten(x) for x in scores])
    num_params_to_keep = int(len(all_scores) * keep_ratio)
    threshold, _ = torch.topk(all_scores, num_params_to_keep, sorted=True)
    acceptable_score = threshold[-1]
    return [
        float(((g > acceptable_score).float() == 0).sum().item() / g.numel())
        for g in scores
    ]


def release_erk_densities(masks, density, erk_power_scale=1.0):
    """The ``'ERK'`` branch of ``Masking.init``: per-layer density."""
    dense_layers = set()
    while True:
        divisor = 0
        rhs = 0
        raw_probabilities = {}
        for name, mask in masks.items():
            n_param = np.prod(mask.shape)
            n_zeros = n_param * (1 - density)
            n_ones = n_param * density
            if name in dense_layers:
                rhs -= n_zeros
            else:
                rhs += n_ones
                raw_probabilities[name] = (
                    np.sum(mask.shape) / np.prod(mask.shape)
                ) ** erk_power_scale
                divisor += raw_probabilities[name] * n_param
        epsilon = rhs / divisor
        max_prob = np.max(list(raw_probabilities.values()))
        if max_prob * epsilon > 1:
            for mask_name, mask_raw_prob in raw_probabilities.items():
                if mask_raw_prob == max_prob:
                    dense_layers.add(mask_name)
        else:
            break
    return {
        name: 1.0
        if name in dense_layers
        else epsilon * raw_probabilities[name]
        for name in masks
    }


def release_dense_layers(masks):
    """``Masking.init``'s tail: layers kept at 99% or more stay dense."""
    return [
        name
        for name, mask in masks.items()
        if (mask != 0).sum().int().item() / mask.numel() >= 0.99
    ]


def release_ema_update(ema, model_weights, masks, decay):
    """``ModelEma.update`` with a mask (names in ``masks``) or without."""
    with torch.no_grad():
        for k, ema_v in ema.items():
            model_v = model_weights[k].detach()
            if k in masks:
                mask = masks[k].float()
                new = ((ema_v.data != 0).byte() ^ mask.byte()) & mask.byte()
                ema_v.data.copy_(
                    (ema_v.data * decay + model_v * (1 - decay))
                    .mul_(mask)
                    .add_(new * decay * model_v)
                )
            else:
                ema_v.copy_(ema_v * decay + (1.0 - decay) * model_v)


# ----------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------

SLAK_T = dict(
    arch='tiny',
    kernel_sizes=(51, 49, 47, 13),
    small_kernel=5,
    width_factor=1.3,
)


@functools.lru_cache(maxsize=1)
def slak_t_on_meta():
    """SLaK-T's parameters by name, with shapes only (no memory)."""
    return SLaK(**SLAK_T).to('meta')


def slak_t_layers(seed=0):
    """Real tensors shaped like one SLaK-T block of stage 0 and the
    stage-1 downsampling conv, by SLaK-T's names."""
    names = (
        'stages.0.0.large_kernel.vertical.conv.weight',
        'stages.0.0.large_kernel.horizontal.conv.weight',
        'stages.0.0.large_kernel.small.conv.weight',
        'stages.0.0.pointwise_conv1.weight',
        'stages.0.0.pointwise_conv2.weight',
        'downsample_layers.1.1.weight',
    )
    shapes = dict(slak_t_on_meta().named_parameters())
    generator = torch.Generator().manual_seed(seed)
    return {
        name: nn.Parameter(
            torch.randn(shapes[name].shape, generator=generator) * 0.02
        )
        for name in names
    }


def random_grads(params, generator):
    for param in params.values():
        param.grad = torch.randn(param.shape, generator=generator)


# ----------------------------------------------------------------------
# 1. Optimizer state at masked positions
# ----------------------------------------------------------------------


@pytest.mark.parametrize('optimizer_type', ['AdamW', 'SGD'])
def test_masks_zero_optimizer_state_as_released(optimizer_type):
    generator = torch.Generator().manual_seed(0)
    ours = {n: nn.Parameter(torch.randn(6, 5, 3, 3)) for n in 'ab'}
    theirs = {n: nn.Parameter(p.detach().clone()) for n, p in ours.items()}
    masks = initial_masks(ours, 'uniform', 0.5, seeded_generator(0, 0))

    def make(params):
        if optimizer_type == 'SGD':
            return torch.optim.SGD(params.values(), lr=0.1, momentum=0.9)
        return torch.optim.AdamW(params.values(), lr=0.1)

    our_opt, their_opt = make(ours), make(theirs)
    state = MaskState(nn.ParameterDict(ours), masks)
    for _ in range(3):
        random_grads(ours, generator)
        for name in ours:
            theirs[name].grad = ours[name].grad.clone()
        our_opt.step()
        state.apply(our_opt)
        their_opt.step()
        release_apply_mask(theirs, masks, their_opt)
    for name in ours:
        assert torch.equal(ours[name], theirs[name])
        our_state = our_opt.state[ours[name]]
        their_state = their_opt.state[theirs[name]]
        assert our_state.keys() == their_state.keys()
        for key, value in our_state.items():
            assert torch.equal(value, their_state[key]), key
    if optimizer_type == 'AdamW':
        # Adam's moments at masked positions are untouched (non-zero).
        exp_avg = our_opt.state[ours['a']]['exp_avg']
        assert (exp_avg[~masks['a']] != 0).all()
        # The named option zeroes them too.
        state.apply(our_opt, all_state=True)
        for key in ('exp_avg', 'exp_avg_sq'):
            assert (our_opt.state[ours['a']][key][~masks['a']] == 0).all()


# ----------------------------------------------------------------------
# 3 + full step. Prune and regrow on SLaK-T-shaped layers with AdamW state
# ----------------------------------------------------------------------


@pytest.mark.parametrize('growth', ['gradient', 'momentum'])
def test_full_update_step_on_slak_t_layers_with_adamw(growth):
    generator = torch.Generator().manual_seed(1)
    ours = slak_t_layers()
    theirs = {n: nn.Parameter(p.detach().clone()) for n, p in ours.items()}
    bool_masks = initial_masks(
        ours,
        'snip',
        0.4,
        seeded_generator(0, 0),
        snip_scores={
            n: torch.rand(p.shape, generator=generator)
            for n, p in ours.items()
        },
    )
    float_masks = {n: m.float() for n, m in bool_masks.items()}
    state = MaskState(
        nn.ParameterDict({n.replace('.', '-'): p for n, p in ours.items()}),
        {n.replace('.', '-'): m for n, m in bool_masks.items()},
    )
    adamw = dict(lr=4e-3, weight_decay=0.05)
    our_opt = torch.optim.AdamW(ours.values(), **adamw)
    their_opt = torch.optim.AdamW(theirs.values(), **adamw)
    release_apply_mask(theirs, float_masks, their_opt)
    state.apply(our_opt)

    def step(update):
        random_grads(ours, generator)
        for name in ours:
            theirs[name].grad = ours[name].grad.clone()
        our_opt.step()
        if update:
            new = prune_and_regrow(
                state.params, state.masks, 0.5, growth, optimizer=our_opt
            )
            regrown = state.update_masks(new)
        state.apply(our_opt)
        their_opt.step()
        release_apply_mask(theirs, float_masks, their_opt)
        if update:
            release_truncate(theirs, float_masks, 0.5, growth, their_opt)
            return regrown

    step(False)
    step(False)
    regrown = step(True)
    assert sum(regrown.values()) > 0
    step(False)  # the regrown weights take a step with their moments
    for name, param in ours.items():
        key = name.replace('.', '-')
        assert torch.equal(state.masks[key], float_masks[name].bool()), name
        assert torch.equal(param, theirs[name]), name
        for moment in ('exp_avg', 'exp_avg_sq'):
            assert torch.equal(
                our_opt.state[param][moment],
                their_opt.state[theirs[name]][moment],
            ), (name, moment)


def test_momentum_growth_scores_as_released():
    generator = torch.Generator().manual_seed(2)
    param = nn.Parameter(torch.randn(8, 1, 7, 3))
    for optimizer in (
        torch.optim.AdamW([param], lr=0.1),
        torch.optim.Adam([param], lr=0.1, amsgrad=True),
        torch.optim.SGD([param], lr=0.1, momentum=0.9),
    ):
        for _ in range(3):
            param.grad = torch.randn(param.shape, generator=generator)
            optimizer.step()
        ours = growth_scores('momentum', param, optimizer.state[param])
        theirs = torch.abs(release_momentum(optimizer, param))
        assert torch.equal(ours, theirs), type(optimizer).__name__


# ----------------------------------------------------------------------
# Random growth: the release draws Bernoulli(k / n), we draw exactly k
# ----------------------------------------------------------------------


def test_random_growth_matches_the_release_in_expectation():
    numel, draws = 400, 300
    weight = nn.Parameter(torch.randn(numel))
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[:240] = True  # density 0.6
    prune_rate = 0.3
    num_remove = math.ceil(prune_rate * 240)
    ours_counts = torch.zeros(numel)
    theirs_totals = []
    for draw in range(draws):
        new = prune_and_regrow(
            {'w': weight},
            {'w': mask},
            prune_rate,
            'random',
            generator=seeded_generator(draw, 1),
        )['w']
        assert int(new.sum()) == 240  # exactly the same count every time
        ours_counts += (new & ~mask).float()
        # The release: prune, then rand < k / n over the zeros.
        pruned = mask.clone()
        order = torch.argsort(weight.detach().abs().masked_fill(~mask, -1))
        pruned[order[numel - 240 : numel - 240 + num_remove]] = False
        zeros = int((~pruned).sum())
        grown = (torch.rand(numel) < num_remove / zeros) & ~pruned
        theirs_totals.append(int(grown.sum()))
    theirs = torch.tensor(theirs_totals, dtype=torch.float)
    # Same expected number grown: the release's mean within 4 standard
    # errors of our (fixed) count.
    stderr = theirs.std() / math.sqrt(draws)
    assert abs(theirs.mean() - num_remove) < 4 * stderr
    # Ours grows each previously masked position with the same chance.
    outside = ours_counts[~mask] / draws
    expected = num_remove / (numel - 240 + num_remove)
    assert abs(outside.mean() - expected) < 0.01


# ----------------------------------------------------------------------
# 2. SNIP: densities from the scores, and the scores' inputs
# ----------------------------------------------------------------------


def test_snip_densities_as_released_with_ties():
    generator = torch.Generator().manual_seed(3)
    scores = {
        'a': torch.rand(40, 8, generator=generator),
        # Many equal scores at the threshold: the release keeps none.
        'b': torch.full((50,), 0.5),
        'c': torch.rand(3, 4, 5, 5, generator=generator),
    }
    above = sum(int((v > 0.5).sum()) for v in scores.values())
    tied = (above + 25) / 670  # the k-th largest score is a tied 0.5
    for density in (0.3, tied, 0.95):
        ours = snip_densities(scores, density)
        theirs = release_snip_layer_sparsities(list(scores.values()), density)
        for ours_density, sparsity in zip(ours.values(), theirs):
            assert math.isclose(ours_density, 1 - sparsity, abs_tol=1e-12)
        if density == tied:
            assert ours['b'] == 0.0


# ----------------------------------------------------------------------
# 4. Which layers stay dense
# ----------------------------------------------------------------------


def test_layers_at_99_percent_stay_dense_as_released():
    weights = {
        'exact_99': torch.randn(100),  # 99 of 100 kept: dense
        'below_99': torch.randn(1000),  # 989 of 1000 kept: masked
        'half': torch.randn(400),
    }
    scores = {
        'exact_99': torch.cat([torch.full((99,), 5.0), torch.zeros(1)]),
        'below_99': torch.cat([torch.full((989,), 4.0), torch.zeros(11)]),
        'half': torch.cat([torch.full((200,), 3.0), torch.zeros(200)]),
    }
    density = 1300 / 1500  # the k-th score is 0: every positive kept
    densities = snip_densities(scores, density)
    assert densities == {'exact_99': 0.99, 'below_99': 0.989, 'half': 0.5}
    masks = initial_masks(
        weights, 'snip', 1 - density, seeded_generator(0, 0), scores
    )
    assert sorted(masks) == ['below_99', 'half']
    # The release's rule on our drawn masks drops the same layers.
    from slak_mm.sparse.initialization import random_masks

    ours_drawn = random_masks(
        {n: w.shape for n, w in weights.items()},
        densities,
        seeded_generator(0, 0),
    )
    assert release_dense_layers(ours_drawn) == ['exact_99']
    assert set(masks) == set(weights) - set(release_dense_layers(ours_drawn))


# ----------------------------------------------------------------------
# 6. --only-L
# ----------------------------------------------------------------------


ONLY_L = ['*large_kernel.vertical.*', '*large_kernel.horizontal.*']


@pytest.mark.parametrize('density', [0.6, 0.7])
def test_erk_densities_as_released_on_slak_t(density):
    from slak_mm.sparse import erk_densities

    params = select_maskable_parameters(slak_t_on_meta())
    shapes = {n: p.shape for n, p in params.items()}
    ours = erk_densities(shapes, density)
    theirs = release_erk_densities(
        {n: torch.empty(s, device='meta') for n, s in shapes.items()},
        density,
    )
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert math.isclose(value, theirs[name], rel_tol=1e-12), name


def test_only_l_pattern_selects_the_releases_36_strips():
    backbone = slak_t_on_meta()
    ours = select_maskable_parameters(backbone, include=ONLY_L)
    release_names = {
        slak_mm_to_release_key(name): param
        for name, param in backbone.named_parameters()
    }
    theirs = {
        name
        for name, tensor in release_names.items()
        if len(tensor.size()) in (2, 4) and 'large_kernel.LoRA' in name
    }
    assert len(theirs) == 36
    assert {slak_mm_to_release_key(n) for n in ours} == theirs
    # Without --only-L the release masks every 2-D and 4-D weight; so do we.
    every = {n for n, t in release_names.items() if len(t.size()) in (2, 4)}
    assert {
        slak_mm_to_release_key(n) for n in select_maskable_parameters(backbone)
    } == every
    # The broader pattern also takes the 18 small 5x5 kernels.
    broad = select_maskable_parameters(backbone, include='*large_kernel*')
    assert len(broad) == 54


# ----------------------------------------------------------------------
# 7. The prune-rate cosine, past T too, and T of the ImageNet configs
# ----------------------------------------------------------------------


@pytest.mark.parametrize('total_steps', [7, 100, 93600])
def test_cosine_prune_rate_matches_cosine_decay_past_the_end(total_steps):
    # CosineDecay: CosineAnnealingLR over an SGD holding the prune rate.
    param = nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([param], lr=0.5)
    stepper = torch.optim.lr_scheduler.CosineAnnealingLR(
        sgd, total_steps, 0.005
    )
    steps = int(1.3 * total_steps)
    checked = set(range(0, steps, max(1, total_steps // 97))) | {
        total_steps,
        steps,
    }
    worst = 0.0
    for step in range(1, steps + 1):
        stepper.step()
        if step in checked:
            theirs = sgd.param_groups[0]['lr']
            ours = cosine_prune_rate(step, total_steps, 0.5, 0.005)
            worst = max(worst, abs(ours - theirs))
    # CosineAnnealingLR updates the rate recursively, which accumulates
    # rounding (2.7e-10 after 1.3 x 93,600 steps); the closed form does not.
    assert worst < 1e-12 * max(1, steps / 100)
    # Past T the rate rises again, as released.
    assert cosine_prune_rate(
        int(1.2 * total_steps), total_steps, 0.5, 0.005
    ) > cosine_prune_rate(total_steps, total_steps, 0.5, 0.005)


@pytest.mark.parametrize('arch', ['t', 's', 'b'])
def test_imagenet_configs_take_t_and_ema_from_the_release(arch):
    from mmengine.config import Config

    cfg = Config.fromfile(f'configs/classification/slak_{arch}_in1k.py')
    hooks = {h['type']: h for h in cfg.custom_hooks}
    sparse, ema = hooks['SparseTrainingHook'], hooks['EMAHook']
    # main.py: steps per epoch = len(dataset_train) // total_batch_size,
    # total_batch_size = batch_size * update_freq * world_size; the cosine
    # runs over steps per epoch * epochs. 8 GPUs, ImageNet-1k train set.
    accumulate = cfg.optim_wrapper.accumulative_counts
    total_batch = cfg.train_dataloader.batch_size * accumulate * 8
    assert total_batch == 4096
    release_t = (1281167 // total_batch) * cfg.train_cfg.max_epochs
    assert release_t == 93600
    assert sparse['total_steps'] == release_t
    # model_sema.ModelEma: decay 0.9999 per optimizer step, over the whole
    # state dict (BN buffers included).
    assert ema['momentum'] == 1e-4
    assert ema['interval'] == accumulate
    assert ema['update_buffers'] is True


# ----------------------------------------------------------------------
# 5. EMA at regrowth (model_sema.ModelEma), inside an mmengine Runner
# ----------------------------------------------------------------------


@pytest.mark.parametrize('accumulate', [1, 2])
def test_ema_of_regrown_weights_as_released(tmp_path, accumulate):
    from mmengine.hooks import EMAHook, Hook

    class Recorder(Hook):
        priority = 'LOW'  # after SparseTrainingHook and EMAHook

        def __init__(self):
            self.records = []

        def after_train_iter(
            self, runner, batch_idx, data_batch=None, outputs=None
        ):
            ema_hook = next(h for h in runner.hooks if isinstance(h, EMAHook))
            masks = sparse_hook(runner).controller.mask_state.masks
            ema = ema_hook.ema_model.module.state_dict()
            weights = runner.model.state_dict()
            self.records.append(
                (
                    {k: v.clone() for k, v in weights.items()},
                    {f'backbone.{n}': m.clone() for n, m in masks.items()},
                    {k: v.clone() for k, v in ema.items()},
                )
            )

    recorder = Recorder()
    momentum = 0.2
    runner = make_runner(
        tmp_path,
        [
            dict(type='EMAHook', momentum=momentum, interval=accumulate),
            dict(
                type='SparseTrainingHook',
                sparsity=0.5,
                init='uniform',
                growth='gradient',
                prune_rate=0.5,
                update_interval=1,
            ),
            recorder,
        ],
        max_iters=10 * accumulate,
        accumulative_counts=accumulate,
        checkpoint_interval=100,
    )
    runner.train()
    records = recorder.records
    release_ema = {k: v.clone() for k, v in records[0][2].items()}
    compared = 0
    for t in range(1, len(records)):
        weights, masks, ours = records[t]
        if (t + 1) % accumulate == 0:  # an optimizer step: the release
            release_ema_update(release_ema, weights, masks, 1 - momentum)
        if t % accumulate == 0:  # our EMA averaged at this iteration
            for key, value in ours.items():
                assert torch.allclose(
                    value, release_ema[key], rtol=1e-5, atol=1e-7
                ), (t, key)
            compared += 1
    assert compared >= 9
    # A weight regrown at step s has, one step later, the weight's value
    # itself as its average (not (1 - decay) times it), exactly.
    regrown_checked = 0
    steps = range(accumulate - 1, len(records), accumulate)
    for s in steps:
        later = s + accumulate
        averaged = later if accumulate == 1 else later + 1
        if s - accumulate < 0 or averaged >= len(records):
            continue
        weights, later_masks, _ = records[later]
        ema = records[averaged][2]
        for key, mask in records[s][1].items():
            grown = mask & ~records[s - accumulate][1][key]
            grown &= later_masks[key] & (weights[key] != 0)
            assert torch.equal(ema[key][grown], weights[key][grown])
            regrown_checked += int(grown.sum())
    assert regrown_checked > 0


# ----------------------------------------------------------------------
# 2. SNIP's inputs: one raw batch, plain cross-entropy on hard labels
# ----------------------------------------------------------------------


def test_snip_scores_a_raw_batch_with_plain_cross_entropy(tmp_path):
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import Runner
    from mmpretrain.utils import register_all_modules
    from torch.utils.data import DataLoader

    from .helpers import CLS_MEAN as mean
    from .helpers import CLS_STD as std

    register_all_modules(init_default_scope=False)
    dataset = ClassificationSamples(length=4)
    runner = Runner(
        model=dict(
            tiny_classifier_cfg(
                loss=dict(
                    type='LabelSmoothLoss',
                    label_smooth_val=0.1,
                    mode='original',
                ),
                preprocessor=dict(num_classes=5),
                drop_path_rate=0.0,
            ),
            train_cfg=dict(
                augments=[
                    dict(type='Mixup', alpha=0.8),
                    dict(type='CutMix', alpha=1.0),
                ]
            ),
        ),
        work_dir=str(tmp_path),
        default_scope='mmpretrain',
        train_dataloader=DataLoader(
            dataset, batch_size=4, collate_fn=pseudo_collate
        ),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=1),
        custom_hooks=[dict(type='SparseTrainingHook', init='snip')],
        randomness=dict(seed=0),
    )
    model = runner.model
    names = list(select_maskable_parameters(model.backbone))
    ours = sparse_hook(runner)._snip_scores(runner, model, names)

    # The release's SNIP: the batch as the loader gives it (normalized
    # images, class indices), net(images), F.cross_entropy.
    net = copy.deepcopy(model)
    net.train()
    net.zero_grad()
    images = (
        dataset.images.float() - torch.tensor(mean).view(1, 3, 1, 1)
    ) / torch.tensor(std).view(1, 3, 1, 1)
    outputs = net.head(net.backbone(images))
    F.cross_entropy(outputs, dataset.labels).backward()
    weights = dict(net.backbone.named_parameters())
    theirs = {n: torch.abs(weights[n] * weights[n].grad) for n in names}
    for name in names:
        scale = theirs[name].abs().max().item()
        assert torch.allclose(
            ours[name], theirs[name], rtol=1e-4, atol=1e-5 * scale
        ), name
    our_densities = snip_densities(ours, 0.6)
    their_sparsities = release_snip_layer_sparsities(
        list(theirs.values()), 0.6
    )
    worst = max(
        abs(d - (1 - s))
        for d, s in zip(our_densities.values(), their_sparsities)
    )
    assert worst < 1e-3

    # The test can tell: with Mixup / CutMix and the label-smoothed loss
    # (what the model trains on), the scores are far from the release's.
    augmented = copy.deepcopy(model)
    augmented.train()
    batch = pseudo_collate([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    data = augmented.data_preprocessor(batch, True)
    loss, _ = augmented.parse_losses(augmented(**data, mode='loss'))
    loss.backward()
    weights = dict(augmented.backbone.named_parameters())
    far = [
        n
        for n in names
        if not torch.allclose(
            (weights[n] * weights[n].grad).abs(),
            theirs[n],
            rtol=1e-2,
            atol=1e-3 * theirs[n].abs().max().item(),
        )
    ]
    assert len(far) > len(names) // 2

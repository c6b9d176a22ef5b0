"""Mask state, initial masks and mask updates, in plain torch."""

import math

import pytest
import torch
import torch.nn as nn

from slak_mm.models import SLaK
from slak_mm.sparse import (
    MaskState,
    cosine_prune_rate,
    erk_densities,
    initial_masks,
    magnitude_prune,
    prune_and_regrow,
    resolve_module,
    seeded_generator,
    select_maskable_parameters,
    snip_densities,
)

from .helpers import TINY_ARCH


class SmallNet(nn.Module):
    """A conv, a linear and some 1-D parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.Conv2d(6, 8, 1)
        )
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.backbone(x).mean((2, 3)))


def tiny_slak():
    return SLaK(arch=TINY_ARCH, kernel_sizes=[13, 11, 9, 7], small_kernel=3)


def test_default_selection_covers_every_2d_and_4d_weight_of_slak():
    backbone = tiny_slak()
    selected = select_maskable_parameters(backbone)
    expected = [n for n, p in backbone.named_parameters() if p.dim() in (2, 4)]
    assert list(selected) == expected
    assert 'stages.2.1.large_kernel.vertical.conv.weight' in selected
    assert 'stages.0.0.pointwise_conv1.weight' in selected
    assert 'downsample_layers.0.0.weight' in selected
    assert not any(n.endswith(('bias', 'gamma')) for n in selected)


def test_selection_patterns_and_frozen_parameters():
    backbone = tiny_slak()
    selected = select_maskable_parameters(
        backbone, include='*large_kernel*', exclude='*.small.*'
    )
    assert selected and all('large_kernel' in n for n in selected)
    assert not any('.small.' in n for n in selected)
    backbone.downsample_layers[0][0].weight.requires_grad_(False)
    assert 'downsample_layers.0.0.weight' not in (
        select_maskable_parameters(backbone)
    )


def test_selection_errors_name_the_problem():
    backbone = tiny_slak()
    with pytest.raises(ValueError, match="'\\*lora\\*' matches no"):
        select_maskable_parameters(backbone, include=['*lora*'])
    with pytest.raises(ValueError, match='no trainable 2-D or 4-D'):
        select_maskable_parameters(backbone, exclude='*')
    with pytest.raises(AttributeError, match="no submodule 'neck'"):
        resolve_module(SmallNet(), 'neck')
    model = SmallNet()
    assert resolve_module(model, None) is model
    assert resolve_module(model, 'backbone') is model.backbone


@pytest.mark.parametrize('mode', ['uniform', 'erk', 'snip'])
def test_initial_masks_hit_the_target_sparsity(mode):
    backbone = tiny_slak()
    params = select_maskable_parameters(backbone)
    scores = {n: torch.rand(p.shape) for n, p in params.items()}
    masks = initial_masks(
        params, mode, 0.4, seeded_generator(0, 0), snip_scores=scores
    )
    # Fully dense layers drop out; they count as kept.
    kept = sum(
        int(masks[n].sum()) if n in masks else p.numel()
        for n, p in params.items()
    )
    total = sum(p.numel() for p in params.values())
    # Each layer rounds its count to an integer: at most 1/2 off per layer.
    assert abs(kept - 0.6 * total) <= len(params)
    assert all(m.dtype == torch.bool for m in masks.values())
    assert not any(bool(m.all()) for m in masks.values())
    if mode == 'uniform':
        for mask in masks.values():
            assert mask.sum() == round(0.6 * mask.numel())


def test_erk_makes_small_layers_dense_and_keeps_the_budget():
    shapes = {
        'stem': torch.Size([8, 3, 3, 3]),  # 216 params, (sum/prod) large
        'wide': torch.Size([64, 64, 3, 3]),  # 36864 params
    }
    densities = erk_densities(shapes, 0.1)
    assert densities['stem'] == 1.0
    budget = 0.1 * (216 + 36864)
    assert math.isclose(216 + densities['wide'] * 36864, budget)
    masks = initial_masks(
        {n: torch.randn(s) for n, s in shapes.items()},
        'erk',
        0.9,
        seeded_generator(0, 0),
    )
    assert list(masks) == ['wide']


def test_snip_densities_from_global_top_k_by_hand():
    scores = {
        'a': torch.tensor([9.0, 8.0, 7.0, 6.0]),
        'b': torch.tensor([5.0, 0.1, 0.2, 0.3, 0.4, 4.0, 0.0, 0.0]),
    }
    # 12 weights at density 0.5: the 6th largest score is 4.0, and each
    # layer keeps its scores strictly above it: all of a, one of b.
    assert snip_densities(scores, 0.5) == {'a': 1.0, 'b': 0.125}
    masks = initial_masks(
        {'a': torch.ones(4), 'b': torch.ones(8)},
        'snip',
        0.5,
        seeded_generator(0, 0),
        snip_scores=scores,
    )
    assert list(masks) == ['b'] and int(masks['b'].sum()) == 1


def test_from_weights_keeps_zeros_and_drops_dense_layers():
    weights = {
        'sparse': torch.tensor([[0.0, 1.0], [2.0, 0.0]]),
        'dense': torch.ones(2, 2),
    }
    masks = initial_masks(weights, 'from_weights', 0.0, seeded_generator(0, 0))
    assert list(masks) == ['sparse']
    assert masks['sparse'].tolist() == [[False, True], [True, False]]


def test_random_masks_depend_only_on_seed_and_index():
    params = select_maskable_parameters(tiny_slak())
    first = initial_masks(params, 'uniform', 0.5, seeded_generator(3, 0))
    again = initial_masks(params, 'uniform', 0.5, seeded_generator(3, 0))
    other = initial_masks(params, 'uniform', 0.5, seeded_generator(3, 1))
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_init_errors():
    params = {'w': torch.randn(4, 4)}
    with pytest.raises(ValueError, match="unknown sparse init mode 'grasp'"):
        initial_masks(params, 'grasp', 0.5, seeded_generator(0, 0))
    for sparsity in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r'sparsity must lie in \[0, 1\)'):
            initial_masks(params, 'uniform', sparsity, seeded_generator(0, 0))


def test_mask_state_rejects_wrong_names_and_shapes():
    model = SmallNet()
    with pytest.raises(KeyError, match='names no parameter'):
        MaskState(model, {'neck.weight': torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match='must be bool of shape'):
        MaskState(model, {'head.weight': torch.ones(5, 8)})


def _adam_after_one_step(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 6, 6)).square().sum().backward()
    optimizer.step()
    return optimizer


def test_apply_zeroes_weights_and_sgd_momentum_only_by_default():
    model = SmallNet()
    params = select_maskable_parameters(model)
    masks = initial_masks(params, 'uniform', 0.5, seeded_generator(0, 0))
    state = MaskState(model, masks)
    adam = _adam_after_one_step(model)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 6, 6)).square().sum().backward()
    sgd.step()
    for name in masks:
        assert (params[name][~masks[name]] != 0).any()
    state.apply(adam)
    state.apply(sgd)
    for name, mask in masks.items():
        param = params[name]
        assert (param[~mask] == 0).all()
        assert (param[mask] != 0).any()
        # As released: Adam's moments stay, SGD's momentum is masked.
        for key in ('exp_avg', 'exp_avg_sq'):
            assert (adam.state[param][key][~mask] != 0).any()
        assert (sgd.state[param]['momentum_buffer'][~mask] == 0).all()
    state.apply(adam, all_state=True)
    for name, mask in masks.items():
        for key in ('exp_avg', 'exp_avg_sq'):
            assert (adam.state[params[name]][key][~mask] == 0).all()
            assert (adam.state[params[name]][key][mask] != 0).any()
    # The scalar step count is not a per-weight state and is left alone.
    assert all(float(s['step']) == 1 for s in adam.state.values())


@pytest.mark.parametrize('growth', ['random', 'gradient', 'momentum'])
def test_update_keeps_each_layer_count_and_regrows_at_zero(growth):
    model = SmallNet()
    params = select_maskable_parameters(model)
    masks = initial_masks(params, 'uniform', 0.5, seeded_generator(0, 0))
    state = MaskState(model, masks)
    state.apply()
    optimizer = _adam_after_one_step(model)  # leaves grads in place
    before = state.nonzero_counts()
    old_masks = {n: m.clone() for n, m in state.masks.items()}
    new_masks = prune_and_regrow(
        state.params,
        state.masks,
        0.5,
        growth,
        optimizer=optimizer,
        generator=seeded_generator(0, 1),
    )
    assert {n: int(m.sum()) for n, m in new_masks.items()} == before
    regrown = state.update_masks(new_masks)
    state.apply(optimizer)
    assert state.nonzero_counts() == before
    for name, old in old_masks.items():
        new = state.masks[name]
        assert not torch.equal(new, old)  # the update changed something
        grown = new & ~old
        assert int(grown.sum()) == regrown[name] > 0
        assert (params[name][grown] == 0).all()
        assert (params[name][~new] == 0).all()


def test_magnitude_prune_drops_the_smallest_kept_weights():
    weight = torch.tensor([0.0, -5.0, 0.1, 3.0, -0.2, 7.0])
    mask = torch.tensor([False, True, True, True, True, True])
    pruned = magnitude_prune(weight, mask, 2)
    assert pruned.tolist() == [False, True, False, True, False, True]
    # NaN at a masked position is no problem; at a kept one it stops.
    weight[0] = math.nan
    assert torch.equal(magnitude_prune(weight, mask, 2), pruned)
    weight[3] = math.nan
    with pytest.raises(FloatingPointError, match='NaN or inf'):
        magnitude_prune(weight, mask, 2)


def test_update_on_non_finite_weights_names_the_layers():
    params = {
        'good': nn.Parameter(torch.randn(10)),
        'bad': nn.Parameter(torch.randn(10)),
    }
    masks = {n: torch.arange(10) < 6 for n in params}
    with torch.no_grad():
        params['bad'][8] = math.inf  # a masked position
    with pytest.raises(FloatingPointError, match=r'1 masked .*\(bad\)'):
        prune_and_regrow(
            params, masks, 0.5, 'random', generator=seeded_generator(0, 1)
        )


def test_gradient_growth_picks_the_largest_gradients():
    param = nn.Parameter(torch.zeros(6))
    param.grad = torch.tensor([9.0, 1.0, -8.0, 0.5, 0.2, 0.1])
    mask = torch.tensor([True, True, False, False, False, True])
    new = prune_and_regrow({'p': param}, {'p': mask}, 0.34, 'gradient')['p']
    # ceil(0.34 * 3) = 2 pruned (the two smallest |w|, ties by position),
    # and 2 grown among the 5 zeros: |grad| 9 and 8.
    assert int(new.sum()) == 3
    assert new[0] and new[2]


def test_growth_errors():
    param = nn.Parameter(torch.ones(4))
    mask = torch.tensor([True, False, True, False])
    with pytest.raises(ValueError, match="unknown sparse growth mode 'x'"):
        prune_and_regrow({'p': param}, {'p': mask}, 0.5, 'x')
    with pytest.raises(RuntimeError, match='gradient'):
        prune_and_regrow({'p': param}, {'p': mask}, 0.5, 'gradient')
    plain_sgd = torch.optim.SGD([param], lr=0.1)
    with pytest.raises(RuntimeError, match='or momentum_buffer'):
        prune_and_regrow(
            {'p': param}, {'p': mask}, 0.5, 'momentum', optimizer=plain_sgd
        )


def test_cosine_prune_rate():
    assert cosine_prune_rate(0, 100, 0.5, 0.005) == 0.5
    assert math.isclose(cosine_prune_rate(50, 100, 0.5, 0.005), 0.2525)
    assert math.isclose(cosine_prune_rate(100, 100, 0.5, 0.005), 0.005)
    # Past the end the cosine goes on, as CosineAnnealingLR does.
    assert math.isclose(cosine_prune_rate(200, 100, 0.5, 0.005), 0.5)
    assert math.isclose(cosine_prune_rate(250, 100, 0.5, 0.005), 0.2525)
    rates = [cosine_prune_rate(s, 100, 0.3, 0.0) for s in range(101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_as_dict_and_state_dict_round_trip():
    backbone = tiny_slak()
    params = select_maskable_parameters(backbone)
    masks = initial_masks(params, 'uniform', 0.4, seeded_generator(0, 0))
    state = MaskState(backbone, masks)
    named = state.as_dict(prefix='backbone.')
    key = 'backbone.stages.2.1.large_kernel.vertical.conv.weight'
    assert named[key].dtype == torch.bool
    assert named[key].shape == (31, 1, 9, 3)
    named[key].fill_(True)  # a copy: the state is untouched
    assert not state.masks[key[len('backbone.') :]].all()
    restored = MaskState.from_state_dict(tiny_slak(), state.state_dict())
    assert list(restored.masks) == list(state.masks)
    assert all(torch.equal(restored.masks[n], m) for n, m in masks.items())
    assert math.isclose(state.density(), 0.6, abs_tol=0.01)

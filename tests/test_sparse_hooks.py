"""SparseTrainingHook / StaticSparsityHook inside mmengine Runners (CPU)."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from mmengine.hooks import EMAHook
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from torch.utils.data import DataLoader

import slak_mm  # noqa: F401  registers the hooks and the safe globals
from slak_mm.engine.hooks import SparseTrainingHook, StaticSparsityHook
from slak_mm.sparse import DynamicSparsity

from .helpers import (
    ClassificationSamples,
    ToyDataset,
    assert_masked_zero,
    make_runner,
    sparse_hook,
    tiny_classifier_cfg,
    toy_model,
)

# Dynamic sparse training with SNIP init and random growth, updated every
# 2 optimizer steps, one step per 2 iterations: 12 iterations are 6 steps
# and 3 updates (at iterations 4, 8 and 12).
DYNAMIC_HOOK = dict(
    type='SparseTrainingHook',
    sparsity=0.5,
    init='snip',
    growth='random',
    prune_rate=0.5,
    update_interval=2,
)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """12 iterations with checkpoints at 6 and 12, plus masks at 6."""
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    runner = make_runner(
        work_dir, [copy.deepcopy(DYNAMIC_HOOK)], accumulative_counts=2
    )
    runner.train()
    return runner, work_dir


def test_registered_in_the_root_registry():
    assert HOOKS.get('SparseTrainingHook') is SparseTrainingHook
    assert HOOKS.get('StaticSparsityHook') is StaticSparsityHook


def test_updates_count_optimizer_steps_under_accumulation(uninterrupted):
    runner, _ = uninterrupted
    sparse = sparse_hook(runner).controller
    assert runner.iter == 12
    assert sparse.optimizer_steps == 6
    assert sparse.num_updates == 3
    assert sparse.total_steps == 6
    assert math.isclose(sparse.current_prune_rate, sparse.prune_rate_floor)
    # Masks are enforced on the live weights after the last step.
    assert_masked_zero(runner.model.state_dict(), sparse.mask_state.masks)
    assert math.isclose(sparse.density, 0.5, abs_tol=0.01)


def test_resume_gives_identical_masks_and_weights(uninterrupted, tmp_path):
    full_run, work_dir = uninterrupted
    checkpoint = work_dir / 'iter_6.pth'
    saved = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = saved['sparse_training']
    assert (state['optimizer_steps'], state['num_updates']) == (3, 1)
    final_masks = sparse_hook(full_run).controller.mask_state.masks
    # Masks still change after iteration 6, so the resume has work to do.
    assert any(
        not torch.equal(state['masks'][n], m) for n, m in final_masks.items()
    )

    resumed = make_runner(
        tmp_path,
        [copy.deepcopy(DYNAMIC_HOOK)],
        accumulative_counts=2,
        model=toy_model(seed=1),
        resume=True,
        load_from=str(checkpoint),
    )
    resumed.train()
    sparse = sparse_hook(resumed).controller
    assert (sparse.optimizer_steps, sparse.num_updates) == (6, 3)
    assert list(sparse.mask_state.masks) == list(final_masks)
    for name, mask in final_masks.items():
        assert torch.equal(sparse.mask_state.masks[name], mask), name
    expected = full_run.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_resume_without_mask_state_is_an_error(uninterrupted, tmp_path):
    _, work_dir = uninterrupted
    checkpoint = torch.load(
        work_dir / 'iter_6.pth', map_location='cpu', weights_only=True
    )
    del checkpoint['sparse_training']
    dense_checkpoint = tmp_path / 'dense.pth'
    torch.save(checkpoint, dense_checkpoint)
    runner = make_runner(
        tmp_path,
        [copy.deepcopy(DYNAMIC_HOOK)],
        resume=True,
        load_from=str(dense_checkpoint),
    )
    with pytest.raises(KeyError, match="no 'sparse_training' state"):
        runner.train()


def test_density_and_prune_rate_are_logged(uninterrupted):
    runner, _ = uninterrupted
    sparse = sparse_hook(runner).controller
    hub = runner.message_hub
    density = hub.get_scalar('train/sparse/density').current()
    assert density == sparse.density
    rates = hub.get_scalar('train/sparse/prune_rate').data[0]
    # One value per iteration: the rate the next update would use.
    assert len(rates) == 12
    assert rates[0] == 0.5 and rates[-1] == sparse.current_prune_rate
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    # Per-group densities: conv0, conv2 and the linear of the backbone.
    groups = {
        key
        for key in hub.log_scalars
        if key.startswith('train/sparse/density_')
    }
    assert groups == {f'train/sparse/density_{i}' for i in (0, 2, 6)}
    log_dir = runner.log_dir
    log_text = next(Path(log_dir).glob('*.log')).read_text()
    # SNIP keeps the scores strictly above the k-th largest, as released:
    # one weight fewer than half here.
    assert f'sparse/density: {sparse.density:.4f}' in log_text
    assert math.isclose(sparse.density, 0.5, abs_tol=1e-3)
    assert 'sparse/prune_rate:' in log_text
    # The default LocalVisBackend gets them too.
    scalars_file = Path(log_dir) / 'vis_data' / 'scalars.json'
    last = json.loads(scalars_file.read_text().splitlines()[-1])
    assert {'sparse/density', 'sparse/prune_rate'} <= set(last)


def test_ema_copy_and_saved_weights_stay_masked(tmp_path):
    runner = make_runner(
        tmp_path,
        [
            dict(type='EMAHook', momentum=0.5),
            dict(
                type='SparseTrainingHook',
                sparsity=0.5,
                init='uniform',
                growth='gradient',
                prune_rate=0.5,
                update_interval=2,
            ),
        ],
        max_iters=6,
    )
    runner.train()
    sparse = sparse_hook(runner).controller
    ema_hook = next(h for h in runner.hooks if isinstance(h, EMAHook))
    assert sparse.num_updates == 3
    masks = sparse.mask_state.masks
    ema_weights = ema_hook.ema_model.module.state_dict()
    assert_masked_zero(ema_weights, masks)

    saved = torch.load(
        tmp_path / 'iter_6.pth', map_location='cpu', weights_only=True
    )
    assert_masked_zero(saved['state_dict'], saved['sparse_training']['masks'])
    # After EMAHook's swap the raw weights are under ema_state_dict.
    assert_masked_zero(
        saved['ema_state_dict'],
        saved['sparse_training']['masks'],
        prefix='module.backbone.',
    )
    # The saved weights are the EMA average, not a copy of the raw ones.
    key = 'backbone.0.weight'
    assert not torch.equal(
        saved['state_dict'][key], saved['ema_state_dict'][f'module.{key}']
    )


def test_amp_skipped_steps_do_not_count(tmp_path, monkeypatch):
    from mmengine.optim import AmpOptimWrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    # AmpOptimWrapper refuses to build without CUDA, and its
    # torch.cuda.amp.GradScaler disables itself on CPU. A CPU GradScaler
    # runs the same unscale / skip-on-inf / update path.
    monkeypatch.setattr(
        amp_optimizer_wrapper, 'is_cuda_available', lambda: True
    )
    model = toy_model()
    optim_wrapper = AmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        dtype='bfloat16',
    )
    optim_wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=256.0)
    # Batches 2 and 5 (samples 8-11, 20-23) hold an inf image.
    dataset = ToyDataset(length=32, inf_samples=(9, 21))
    runner = make_runner(
        tmp_path,
        [
            dict(
                type='SparseTrainingHook',
                sparsity=0.5,
                init='uniform',
                growth='momentum',
                prune_rate=0.5,
                update_interval=2,
            )
        ],
        max_iters=8,
        checkpoint_interval=8,
        dataset=dataset,
        model=model,
        optim_wrapper=optim_wrapper,
    )
    runner.train()
    sparse = sparse_hook(runner).controller
    assert optim_wrapper.loss_scaler.get_scale() == 64.0  # halved twice
    assert sparse.optimizer_steps == 6  # 8 iterations, 2 skipped
    assert sparse.num_updates == 3
    weights = runner.model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert_masked_zero(weights, sparse.mask_state.masks)
    saved = torch.load(
        tmp_path / 'iter_8.pth', map_location='cpu', weights_only=True
    )
    assert_masked_zero(saved['state_dict'], saved['sparse_training']['masks'])
    for param, mask in zip(
        sparse.mask_state.params.values(), sparse.mask_state.masks.values()
    ):
        buffer = optim_wrapper.optimizer.state[param]['momentum_buffer']
        assert (buffer[~mask] == 0).all()


def test_stop_update_iter(tmp_path):
    runner = make_runner(
        tmp_path,
        [
            dict(
                type='SparseTrainingHook',
                init='erk',
                update_interval=1,
                stop_update_iter=3,
            )
        ],
        max_iters=6,
    )
    runner.train()
    sparse = sparse_hook(runner).controller
    assert (sparse.optimizer_steps, sparse.num_updates) == (6, 3)


def test_snip_leaves_an_infinite_sampler_running(tmp_path):
    # SNIP's batch must not come from a second iterator over the loader:
    # closing it would close the InfiniteSampler's shared index generator.
    from mmengine.dataset import InfiniteSampler

    dataset = ToyDataset()
    loader = DataLoader(
        dataset,
        batch_size=4,
        sampler=InfiniteSampler(dataset, shuffle=False),
    )
    runner = make_runner(
        tmp_path,
        [dict(type='SparseTrainingHook', init='snip', update_interval=2)],
        max_iters=3 * len(loader),
        loader=loader,
    )
    runner.train()
    assert runner.iter == 3 * len(loader)
    assert sparse_hook(runner).controller.num_updates == 3 * len(loader) // 2


def test_static_hook_keeps_checkpoint_zeros(tmp_path):
    sparse_model = toy_model(seed=3)
    with torch.no_grad():
        conv = sparse_model.backbone[2].weight
        conv[:, :4] = 0  # half of the input channels
    zeros = conv == 0
    checkpoint = tmp_path / 'sparse.pth'
    torch.save({'state_dict': sparse_model.state_dict()}, checkpoint)
    runner = make_runner(
        tmp_path,
        [dict(type='StaticSparsityHook')],
        max_iters=4,
        load_from=str(checkpoint),
    )
    runner.train()
    sparse = sparse_hook(runner).controller
    # Layers without zeros drop out; only the sparsified conv is masked.
    assert list(sparse.mask_state.masks) == ['2.weight']
    assert sparse.num_updates == 0 and sparse.optimizer_steps == 4
    trained = runner.model.backbone[2].weight
    assert torch.equal(trained == 0, zeros)
    assert not torch.equal(trained, conv)


def test_the_hook_exposes_its_controller_not_its_attributes(tmp_path):
    hook = SparseTrainingHook(sparsity=0.3, init='uniform')
    assert hook.controller is None  # built in before_train
    assert (hook.settings.sparsity, hook.settings.init) == (
        0.3,
        'uniform',
    )
    # No silent forwarding of the controller's names.
    for name in ('sparsity', 'mask_state', 'num_updates', 'density'):
        assert not hasattr(hook, name), name
    runner = make_runner(tmp_path, [hook], max_iters=2)
    runner.train()
    assert sparse_hook(runner) is hook
    assert isinstance(hook.controller, DynamicSparsity)
    assert hook.controller.sparsity == 0.3
    assert not hasattr(hook, 'mask_state')


def test_hook_argument_errors():
    with pytest.raises(ValueError, match="unknown sparse init mode 'grasp'"):
        SparseTrainingHook(init='grasp')
    with pytest.raises(ValueError, match="unknown sparse growth mode 'rigl'"):
        SparseTrainingHook(growth='rigl')
    for sparsity in (1.0, -0.5):
        with pytest.raises(ValueError, match=r'sparsity must lie in \[0, 1\)'):
            SparseTrainingHook(sparsity=sparsity)
    with pytest.raises(ValueError, match='update_interval'):
        SparseTrainingHook(update_interval=0)


@pytest.mark.parametrize(
    'hook_args, error',
    [
        (dict(sparsity='abc'), TypeError),
        (dict(sparsity=None), TypeError),
        (dict(update_interval=2.5), TypeError),
        (dict(update_interval='100'), TypeError),
        (dict(stop_update_iter=-1), ValueError),
        (dict(stop_update_epoch=1.0), TypeError),
        (dict(total_steps=0), ValueError),
        (dict(total_steps=-5), ValueError),
        (dict(seed='abc'), TypeError),
        (dict(include=5), TypeError),
        (dict(exclude=['*.head*', 3]), TypeError),
        (dict(prune_rate='0.5'), TypeError),
        (dict(mask_all_optimizer_state='yes'), TypeError),
    ],
)
def test_wrong_argument_types_fail_at_construction(hook_args, error):
    (name,) = hook_args
    with pytest.raises(error, match=name):
        SparseTrainingHook(**hook_args)


@pytest.mark.parametrize(
    'optimizer, message',
    [
        (dict(type='SGD', lr=0.1), 'momentum=0'),
        (dict(type='Adagrad', lr=0.1), 'Adagrad keeps neither'),
        (dict(type='Adamax', lr=0.1), 'Adamax keeps neither'),
    ],
)
def test_momentum_growth_without_momentum_fails_before_training(
    tmp_path, optimizer, message
):
    runner = make_runner(
        tmp_path,
        [dict(type='SparseTrainingHook', init='uniform', growth='momentum')],
        optim_wrapper=dict(optimizer=optimizer),
    )
    with pytest.raises(ValueError, match=message):
        runner.train()
    assert runner.iter == 0


def test_non_finite_weights_stop_the_update(tmp_path):
    # Sample 5 is inf: the second batch's step makes every weight NaN.
    runner = make_runner(
        tmp_path,
        [
            dict(
                type='SparseTrainingHook',
                sparsity=0.4,
                init='uniform',
                update_interval=1,
            )
        ],
        dataset=ToyDataset(inf_samples=(5,)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
    )
    with pytest.raises(FloatingPointError, match='hold NaN or inf') as info:
        runner.train()
    assert 'mask update 2 (after optimizer step 2, iteration 2)' in str(
        info.value
    )
    sparse = sparse_hook(runner).controller
    assert sparse.num_updates == 1
    assert math.isclose(sparse.density, 0.6, abs_tol=0.01)


def test_resume_into_other_settings_warns_naming_both(
    uninterrupted, tmp_path, capsys
):
    _, work_dir = uninterrupted
    other = dict(DYNAMIC_HOOK, sparsity=0.3, init='erk')
    resumed = make_runner(
        tmp_path,
        [other],
        accumulative_counts=2,
        resume=True,
        load_from=str(work_dir / 'iter_6.pth'),
    )
    resumed.train()
    out = capsys.readouterr().out
    assert (
        'sparsity=0.5 (checkpoint) vs sparsity=0.3 (config); '
        "init='snip' (checkpoint) vs init='erk' (config)" in out
    )
    sparse = sparse_hook(resumed).controller
    assert (sparse.sparsity, sparse.init) == (0.5, 'snip')
    assert 'sparsity=0.5, init=snip' in out
    assert math.isclose(sparse.density, 0.5, abs_tol=0.01)


@pytest.mark.parametrize(
    'damage, error, message',
    [
        (
            lambda c: c.update(sparse_training=[1, 2]),
            TypeError,
            r"checkpoint\['sparse_training'\] must be a dict .* got a list",
        ),
        (
            lambda c: c['sparse_training'].update(masks=[]),
            TypeError,
            r"\['masks'\] must be a dict of bool tensors .* got a list",
        ),
        (
            lambda c: c['sparse_training'].pop('num_updates'),
            KeyError,
            "no 'num_updates' entry",
        ),
    ],
)
def test_damaged_mask_state_gives_a_clear_error(
    uninterrupted, tmp_path, damage, error, message
):
    _, work_dir = uninterrupted
    checkpoint = torch.load(
        work_dir / 'iter_6.pth', map_location='cpu', weights_only=True
    )
    damage(checkpoint)
    damaged = tmp_path / 'damaged.pth'
    torch.save(checkpoint, damaged)
    runner = make_runner(
        tmp_path,
        [copy.deepcopy(DYNAMIC_HOOK)],
        resume=True,
        load_from=str(damaged),
    )
    with pytest.raises(error, match=message):
        runner.train()


@pytest.mark.parametrize(
    'hook_args, error, message',
    [
        (dict(module_path='neck'), AttributeError, "no submodule 'neck'"),
        (dict(include='*large_kernel*'), ValueError, 'matches no trainable'),
    ],
)
def test_paths_that_match_nothing_are_errors(
    tmp_path, hook_args, error, message
):
    runner = make_runner(
        tmp_path,
        [dict(type='SparseTrainingHook', init='uniform', **hook_args)],
        max_iters=1,
    )
    with pytest.raises(error, match=message):
        runner.train()


def test_whole_model_masks_the_head_too(tmp_path):
    runner = make_runner(
        tmp_path,
        [dict(type='SparseTrainingHook', init='uniform', module_path=None)],
        max_iters=1,
    )
    runner.train()
    names = list(sparse_hook(runner).controller.mask_state.masks)
    assert names == [
        'backbone.0.weight',
        'backbone.2.weight',
        'backbone.6.weight',
        'head.weight',
    ]


def test_tiny_slak_classifier_under_mmpretrain(tmp_path):
    from mmengine.dataset import pseudo_collate
    from mmpretrain.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    loader = DataLoader(
        ClassificationSamples(), batch_size=4, collate_fn=pseudo_collate
    )
    runner = Runner(
        model=tiny_classifier_cfg(),
        work_dir=str(tmp_path),
        experiment_name=f'sparse_test_{tmp_path.name}',
        default_scope='mmpretrain',
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        custom_hooks=[
            dict(
                type='SparseTrainingHook',
                sparsity=0.4,
                init='snip',
                prune_rate=0.5,
                update_interval=1,
            )
        ],
        randomness=dict(seed=0),
    )
    runner.train()
    sparse = sparse_hook(runner).controller
    masks = sparse.mask_state.masks
    assert 'stages.2.1.large_kernel.vertical.conv.weight' in masks
    assert not any(n.startswith('head') for n in masks)
    assert sparse.num_updates == 2
    assert math.isclose(sparse.density, 0.6, abs_tol=0.01)
    assert_masked_zero(runner.model.state_dict(), masks)
    # Each logged group density is the masks' count over the group's
    # selected weights (dense ones fully kept): the stem apart from stage 0.
    kept, total = {}, {}
    for name, param in runner.model.backbone.named_parameters():
        if param.dim() not in (2, 4):
            continue
        parts = name.split('.')
        index = int(parts[1])
        group = (
            'stem'
            if parts[0] == 'downsample_layers' and index == 0
            else f'stage{index}'
        )
        mask = masks.get(name)
        kept[group] = kept.get(group, 0) + (
            param.numel() if mask is None else int(mask.sum())
        )
        total[group] = total.get(group, 0) + param.numel()
    hub = runner.message_hub
    logged = {
        key[len('train/sparse/density_') :]: hub.get_scalar(key).current()
        for key in hub.log_scalars
        if key.startswith('train/sparse/density_')
    }
    assert logged == {group: kept[group] / total[group] for group in kept}
    assert set(logged) == {'stem', 'stage0', 'stage1', 'stage2', 'stage3'}


def test_static_hook_on_dense_weights_warns_and_trains(tmp_path, capsys):
    runner = make_runner(
        tmp_path, [dict(type='StaticSparsityHook')], max_iters=2
    )
    runner.train()
    assert len(sparse_hook(runner).controller.mask_state) == 0
    out = capsys.readouterr().out
    assert 'StaticSparsityHook: every selected layer is dense' in out
    assert 'SparseTrainingHook' not in out


def test_resuming_a_list_gives_a_clear_error(tmp_path):
    not_a_checkpoint = tmp_path / 'list.pth'
    torch.save([{'masks': {}}], not_a_checkpoint)
    runner = make_runner(
        tmp_path,
        [copy.deepcopy(DYNAMIC_HOOK)],
        resume=True,
        load_from=str(not_a_checkpoint),
    )
    with pytest.raises(
        TypeError, match='list.pth holds a list where a checkpoint dict'
    ) as info:
        runner.train()
    assert 'saved without this hook' not in str(info.value)

"""DynamicSparsity without a runner: mmengine-free import, the documented
manual loop, exact resume, and the shared density rule."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from slak_mm.sparse import (
    DynamicSparsity,
    group_densities,
    mask_counts,
    stage_group,
)

from .helpers import REPO

# Runs in a fresh interpreter where every mmengine* import fails.
_WITHOUT_MMENGINE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockMMEngine(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == 'mmengine' or name.startswith('mmengine.'):
                raise ImportError(f'{name} is blocked for this test')
            return None

    sys.meta_path.insert(0, BlockMMEngine())
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import slak_mm.sparse
    from slak_mm.sparse import DynamicSparsity

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sparse = DynamicSparsity(model, sparsity=0.5, init='uniform',
                             growth='gradient', update_interval=2,
                             total_steps=6)
    sparse.build_masks()
    sparse.bind(optimizer)
    for _ in range(6):
        x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        sparse.step()
    zero = all(
        bool((p[~sparse.mask_state.masks[n]] == 0).all())
        for n, p in sparse.mask_state.params.items()
    )
    try:
        import slak_mm.engine.hooks
        hook_error = None
    except ImportError as err:
        hook_error = str(err)
    print(json.dumps(dict(
        steps=sparse.optimizer_steps,
        updates=sparse.num_updates,
        density=sparse.density,
        masked_zero=zero,
        mm_modules=sorted(m for m in sys.modules
                          if m.startswith('mmengine') and sys.modules[m]),
        hook_error=hook_error,
        sparse_has_hooks=hasattr(slak_mm.sparse, 'SparseTrainingHook'),
    )))
    """
)


def test_sparse_package_imports_and_trains_without_mmengine():
    result = subprocess.run(
        [sys.executable, '-c', _WITHOUT_MMENGINE],
        cwd=REPO,
        env={'PYTHONPATH': REPO, 'PATH': '/usr/bin:/bin'},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['mm_modules'] == []
    assert (report['steps'], report['updates']) == (6, 3)
    assert report['density'] == 0.5
    assert report['masked_zero']
    # The hooks need mmengine: importing them says so. The sparse package
    # knows no runner glue, so it offers no hook either.
    assert 'mmengine' in report['hook_error']
    assert not report['sparse_has_hooks']


def _toy_problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5)
    )
    images = torch.randn(12, 3, 8, 8)
    labels = torch.randint(0, 5, (12,))
    loader = [(images[i : i + 4], labels[i : i + 4]) for i in (0, 4, 8)]
    return model, loader


def _documented_loop() -> str:
    text = Path(REPO, 'docs', 'sparse_training.md').read_text()
    section = text[text.index('## Without a runner') :]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_documented_manual_loop_runs_and_keeps_the_density():
    model, loader = _toy_problem()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    code = _documented_loop()
    # Five calls on the controller, the loop itself plain torch.
    calls = re.sub(r'#.*', '', code)
    assert len(re.findall(r'\bsparse\.\w+\(|DynamicSparsity\(', calls)) == 5
    # 9 steps; update every 3 (the documented 100 shortened).
    code = code.replace('update_interval=100', 'update_interval=3')
    scope = dict(model=model, optimizer=optimizer, loader=loader, epochs=3)
    scope.update(F=F, torch=torch)
    exec(compile(code, 'sparse_training.md', 'exec'), scope)
    sparse, saved = scope['sparse'], scope['saved']
    assert (sparse.optimizer_steps, sparse.num_updates) == (9, 3)
    assert sparse.total_steps == 9
    masks = sparse.mask_state.masks
    assert set(masks) == {'0.weight', '3.weight'}
    for name, param in model.named_parameters():
        if name in masks:
            assert bool((param[~masks[name]] == 0).all()), name
            # Updates keep each layer's kept count: ERK's initial one.
            assert int(masks[name].sum()) == int(saved['masks'][name].sum())
    assert sparse.density == pytest.approx(0.6, abs=0.01)
    assert set(saved) == {
        'masks',
        'optimizer_steps',
        'num_updates',
        'init',
        'sparsity',
    }


def _train(model, loader, sparse, optimizer, steps):
    for images, labels in loader[:steps]:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        sparse.step()


def test_restored_state_continues_exactly():
    settings = dict(
        sparsity=0.5, init='erk', growth='random', update_interval=1
    )
    model, loader = _toy_problem()
    loader = loader * 2  # 6 steps
    start = {k: v.clone() for k, v in model.state_dict().items()}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    whole = DynamicSparsity(model, total_steps=6, seed=3, **settings)
    whole.build_masks()
    whole.bind(optimizer)
    _train(model, loader, whole, optimizer, 6)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    # 3 steps, save, then a fresh model, optimizer and controller resume.
    model.load_state_dict(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = DynamicSparsity(model, total_steps=6, seed=3, **settings)
    first.build_masks()
    first.bind(optimizer)
    _train(model, loader, first, optimizer, 3)
    saved = (
        {k: v.clone() for k, v in model.state_dict().items()},
        optimizer.state_dict(),
        first.state_dict(),
    )
    resumed_model, _ = _toy_problem(seed=1)
    resumed_model.load_state_dict(saved[0])
    optimizer = torch.optim.SGD(
        resumed_model.parameters(), lr=0.1, momentum=0.9
    )
    optimizer.load_state_dict(saved[1])
    second = DynamicSparsity(resumed_model, total_steps=6, seed=3, **settings)
    second.load_state_dict(saved[2])
    second.bind(optimizer)
    _train(resumed_model, loader[3:], second, optimizer, 3)
    assert (second.optimizer_steps, second.num_updates) == (6, 6)
    for key, value in resumed_model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    for name, mask in whole.mask_state.masks.items():
        assert torch.equal(second.mask_state.masks[name], mask), name


def test_stop_checks_and_their_position():
    model, loader = _toy_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparse = DynamicSparsity(
        model,
        init='uniform',
        update_interval=1,
        stop_update_iter=2,
        total_steps=3,
    )
    sparse.build_masks()
    sparse.bind(optimizer)
    # Without a set iteration one optimizer step is one iteration.
    _train(model, loader, sparse, optimizer, 3)
    assert sparse.num_updates == 2

    sparse = DynamicSparsity(
        model,
        init='uniform',
        update_interval=1,
        stop_update_epoch=1,
        total_steps=3,
    )
    sparse.build_masks()
    sparse.bind(optimizer)
    with pytest.raises(ValueError, match='current epoch must be set'):
        sparse.step()
    sparse.epoch = 1
    sparse.step()
    assert sparse.num_updates == 0


def test_controller_needs_masks_optimizer_and_schedule():
    model, _ = _toy_problem()
    with pytest.raises(ValueError, match='total_steps'):
        DynamicSparsity(model, init='uniform')
    sparse = DynamicSparsity(model, init='uniform', update_interval=None)
    with pytest.raises(RuntimeError, match='build_masks'):
        sparse.step()
    sparse.build_masks()
    with pytest.raises(RuntimeError, match=r'bind\(optimizer\)'):
        sparse.step()
    with pytest.raises(ValueError, match='needs snip_scores'):
        DynamicSparsity(model, update_interval=None).build_masks()


def test_stage_groups_keep_the_stem_apart():
    names = {
        'downsample_layers.0.0.weight': 'stem',
        'backbone.downsample_layers.0.1.weight': 'stem',
        'downsample_layers.2.1.weight': 'stage2',
        'backbone.stages.0.1.large_kernel.vertical.conv.weight': 'stage0',
        'backbone.norm3.weight': 'out_norms',
        'head.fc.weight': 'head',
    }
    assert {n: stage_group(n) for n in names} == names
    shapes = {
        'stages.1.0.pointwise_conv1.weight': (4, 2),
        'downsample_layers.1.1.weight': (4, 2, 2, 2),
        'downsample_layers.0.0.weight': (2, 3, 4, 4),
    }
    masks = {'stages.1.0.pointwise_conv1.weight': torch.zeros(4, 2).bool()}
    masks['stages.1.0.pointwise_conv1.weight'][0] = True
    counts = mask_counts(shapes, masks)
    assert counts['stages.1.0.pointwise_conv1.weight'] == (2, 8)
    # Ordered stem first; unmasked weights count as fully kept.
    assert list(group_densities(counts).items()) == [
        ('stem', 1.0),
        ('stage1', (2 + 32) / 40),
    ]
    with pytest.raises(ValueError, match="mask of 'x' has shape"):
        mask_counts({'x': (2, 2)}, {'x': torch.ones(3).bool()})


def test_hooks_live_in_engine_and_keep_their_registered_names():
    from mmengine.registry import HOOKS

    import slak_mm  # noqa: F401  registers them
    import slak_mm.sparse
    from slak_mm.engine import hooks

    # The plain-torch package does not reach up to the runner glue.
    assert not hasattr(slak_mm.sparse, 'SparseTrainingHook')
    assert not hasattr(slak_mm.sparse, 'StaticSparsityHook')
    assert HOOKS.get('SparseTrainingHook') is hooks.SparseTrainingHook
    assert HOOKS.get('StaticSparsityHook') is hooks.StaticSparsityHook

"""Generator states as a checkpoint entry (slak_mm.utils.rng), where
RNGStateHook saves and restores them, and atomic checkpoint writes.
End to end with tools/train.py: tests/test_exact_resume.py."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner import IterBasedTrainLoop

from slak_mm.engine import AtomicLocalBackend, RNGStateHook
from slak_mm.engine.hooks import rng_state_hook
from slak_mm.utils.rng import get_rng_states, set_rng_states


def _draw():
    """One number from each global generator (numpy's normal draws use
    the cached second Gaussian when there is one)."""
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        torch.rand(2).tolist(),
    )


def test_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    path = tmp_path / 'states.pth'
    torch.save({'rng_states': get_rng_states()}, path)
    expected = _draw()
    _draw()
    loaded = torch.load(path, weights_only=True)['rng_states']
    assert set_rng_states(loaded) == []
    assert _draw() == expected


def _runner(resume=True, train_loop=None):
    return SimpleNamespace(_resume=resume, train_loop=train_loop, hooks=[])


def _entry(world_size):
    """A checkpoint entry whose rank ``r`` states come from seed ``r``."""
    ranks = []
    for rank in range(world_size):
        _seed_all(rank)
        ranks.append(get_rng_states())
    return dict(world_size=world_size, ranks=ranks)


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _draws_after_seed(seed):
    _seed_all(seed)
    return _draw()


@pytest.fixture
def messages(monkeypatch):
    logged = []
    monkeypatch.setattr(
        rng_state_hook,
        'print_log',
        lambda message, **_: logged.append(message),
    )
    return logged


def _as_rank(monkeypatch, rank, world_size):
    monkeypatch.setattr(
        rng_state_hook, 'get_dist_info', lambda: (rank, world_size)
    )


def test_saves_the_states_training_goes_on_from_also_during_validation():
    hook = RNGStateHook()
    runner = _runner()
    hook.before_val(runner)
    expected = _draw()  # what training would draw next
    torch.rand(3)  # validation draws too (e.g. its loader's base seed)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    hook.after_val(runner)
    assert _draw() == expected  # training draws on as if no validation
    assert checkpoint['rng_states']['world_size'] == 1
    set_rng_states(checkpoint['rng_states']['ranks'][0])
    assert _draw() == expected


def test_resume_restores_before_the_first_batch_after_the_replay():
    entry = _entry(1)
    expected_first_batch = _draws_after_seed(0)[3]
    loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    loop._iter = 3  # mmengine replays 3 batches, then draws the 4th
    own_iterator = (torch.rand(2).tolist() for _ in range(10))
    loop.dataloader_iterator = own_iterator
    hook = RNGStateHook()
    runner = _runner(train_loop=loop)
    hook.after_load_checkpoint(runner, {'rng_states': entry})
    torch.manual_seed(123)  # the runner's reseeding on resume
    hook.before_train_epoch(runner)
    replayed = [next(loop.dataloader_iterator) for _ in range(3)]
    assert expected_first_batch not in replayed
    assert next(loop.dataloader_iterator) == expected_first_batch
    assert loop.dataloader_iterator is own_iterator


def test_load_from_leaves_the_generators_alone():
    hook = RNGStateHook()
    runner = _runner(resume=False, train_loop=object())
    hook.after_load_checkpoint(runner, {'rng_states': _entry(1)})
    expected = _draws_after_seed(7)
    _seed_all(7)
    hook.before_train_epoch(runner)
    assert _draw() == expected


def test_fewer_processes_restore_their_own_rank_and_warn(
    monkeypatch, messages
):
    _as_rank(monkeypatch, rank=0, world_size=1)
    hook = RNGStateHook()
    runner = _runner(train_loop=object())  # restores in before_train_epoch
    hook.after_load_checkpoint(runner, {'rng_states': _entry(2)})
    torch.manual_seed(99)
    hook.before_train_epoch(runner)
    assert _draw() == _draws_after_seed(0)
    assert len(messages) == 1
    assert 'saved with world size 2, this run has 1' in messages[0]


def test_more_processes_new_ranks_keep_their_seeded_states(
    monkeypatch, messages
):
    _as_rank(monkeypatch, rank=1, world_size=2)
    hook = RNGStateHook()
    runner = _runner(train_loop=object())
    hook.after_load_checkpoint(runner, {'rng_states': _entry(1)})
    expected = _draws_after_seed(5)
    _seed_all(5)
    hook.before_train_epoch(runner)
    assert _draw() == expected
    assert 'saved with world size 1, this run has 2' in messages[0]
    assert 'ranks 1..1 keep the states the runner seeded' in messages[0]


def test_a_resumed_checkpoint_without_states_warns(messages):
    RNGStateHook().after_load_checkpoint(_runner(), {'state_dict': {}})
    assert 'holds no generator states' in messages[0]


def test_atomic_backend_is_selected_by_name_and_replaces_whole_files(
    tmp_path,
):
    target = tmp_path / 'sub' / 'iter_4.pth'
    backend = get_file_backend(
        str(target), backend_args=dict(backend='atomic_local')
    )
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'first', target)
    backend.put(b'second', target)
    assert target.read_bytes() == b'second'
    assert sorted(p.name for p in target.parent.iterdir()) == ['iter_4.pth']
    # A write that fails partway leaves the previous file as it was.
    with pytest.raises(TypeError):
        backend.put('not bytes', target)
    assert target.read_bytes() == b'second'

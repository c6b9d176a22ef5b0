"""The plain-torch parts the sparse-training hook calls: argument checks
without a module, SNIP's hard labels, the optimizer lookup and the resume
comparison."""

import dataclasses
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from slak_mm.sparse import DynamicSparsity
from slak_mm.sparse.checks import resume_warning
from slak_mm.sparse.masking import optimizer_holding
from slak_mm.sparse.settings import SparsitySettings
from slak_mm.sparse.snip import hard_labels


def test_settings_fill_the_constructor_defaults():
    settings = SparsitySettings(sparsity=0.5, seed=None)
    assert settings.sparsity == 0.5 and settings.seed is None
    assert (settings.init, settings.update_interval) == ('snip', 100)
    assert 'module' not in settings.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sparsity = 0.9
    # What the hook checks builds the controller unchanged.
    model = nn.Linear(4, 4)
    complete = settings.replace(seed=1, total_steps=9)
    sparse = DynamicSparsity(model, **complete.to_dict())
    assert (sparse.sparsity, sparse.seed, sparse.total_steps) == (0.5, 1, 9)
    assert {
        name: getattr(sparse, name) for name in complete.to_dict()
    } == complete.to_dict()
    for build in (SparsitySettings, partial(DynamicSparsity, model)):
        with pytest.raises(TypeError, match="'sparsty'"):
            build(sparsty=0.5)
        with pytest.raises(ValueError, match='stop_update_iter and'):
            build(stop_update_iter=1, stop_update_epoch=1)
    with pytest.raises(ValueError, match='prune_rate=0.1, prune_rate_floor'):
        settings.replace(prune_rate=0.1, prune_rate_floor=0.2)
    # Complete settings are needed by the controller only.
    with pytest.raises(TypeError, match='seed must be an int, got None'):
        DynamicSparsity(model, **settings.to_dict())


def test_hard_labels_only_for_single_label_samples():
    def sample(label):
        return SimpleNamespace(gt_label=label)

    data = dict(
        data_samples=[sample(torch.tensor([2])), sample(torch.tensor(0))]
    )
    assert hard_labels(data).tolist() == [2, 0]
    assert hard_labels(data).dtype == torch.int64
    multi = dict(data_samples=[sample(torch.tensor([1, 3]))])
    assert hard_labels(multi) is None
    assert hard_labels(dict(data_samples=[SimpleNamespace()])) is None
    assert hard_labels(dict(inputs=torch.zeros(1))) is None


def test_exactly_one_optimizer_must_hold_the_masked_weights():
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    sgd_first = torch.optim.SGD(first.parameters(), lr=0.1)
    sgd_second = torch.optim.SGD(second.parameters(), lr=0.1)
    params = [first.weight]
    assert optimizer_holding([sgd_second, sgd_first], params, 'Hook') is (
        sgd_first
    )
    both = torch.optim.SGD(first.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match='Hook needs exactly one.*found 2'):
        optimizer_holding([sgd_first, both], params, 'Hook')
    with pytest.raises(RuntimeError, match='found 0'):
        optimizer_holding([sgd_second], params, 'Hook')


def test_resume_warning_names_both_values_and_checks_the_module():
    settings = dict(sparsity=0.3, init='snip')
    state = dict(module_path='backbone', sparsity=0.5, init='snip')
    warning = resume_warning(state, settings, 'backbone', 'Hook')
    assert 'sparsity=0.5 (checkpoint) vs sparsity=0.3 (config)' in warning
    assert 'init=' not in warning
    assert resume_warning(state, dict(state), 'backbone', 'Hook') is None
    with pytest.raises(ValueError, match="module_path='backbone'.*None"):
        resume_warning(state, settings, None, 'Hook')

"""tools/model_converters/deploy.py: fused export, output check, reload
with deploy=True."""

import subprocess
import sys

import pytest
import torch

from slak_mm.apis import (
    build_model_from_config,
    flatten_tensors,
    load_checkpoint_strict,
    run_tensor_mode,
)
from slak_mm.converters.deploy import make_test_batch, relative_difference
from slak_mm.utils import safe_torch_load

from .helpers import KERNELS, REPO, SMALL, TINY_ARCH, randomize_batch_norms
from .tool_utils import load_tool, tool_path, write_classifier_config


@pytest.fixture
def trained(tmp_path):
    """A config and a 'trained' checkpoint with sparse weights and extras."""
    config = write_classifier_config(
        tmp_path / 'cfg.py',
        TINY_ARCH,
        KERNELS,
        SMALL,
        layer_scale_init_value=1.0,
    )
    model, _ = build_model_from_config(config)
    model.init_weights()
    randomize_batch_norms(model)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() in (2, 4):
                param[torch.rand_like(param) < 0.4] = 0
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(
        dict(
            meta=dict(epoch=1, iter=10),
            state_dict=model.state_dict(),
            optimizer=dict(state={}, param_groups=[]),
            sparse_masks={'backbone.stages.0.0.pointwise_conv1.weight': 1},
        ),
        path,
    )
    return config, path, model


def outputs(model, batch):
    return flatten_tensors(run_tensor_mode(model, batch))


def test_deploy_tool_checks_saves_and_reloads(tmp_path, trained, capsys):
    config, path, original = trained
    out = str(tmp_path / 'deployed.pth')
    report = load_tool('deploy').main(
        [config, path, out, '--shape', '48', '64']
    )
    printed = capsys.readouterr().out
    assert 'relative' in printed and 'deploy=True' in printed
    assert report['rel_diff'] <= 1e-5
    assert report['dropped'] == ['optimizer', 'sparse_masks']
    assert report['num_params_after'] < report['num_params_before']

    saved = safe_torch_load(out)
    assert sorted(saved) == ['meta', 'state_dict']
    assert saved['meta']['epoch'] == 1
    assert saved['meta']['slak_deploy']['rel_diff'] == report['rel_diff']
    keys = list(saved['state_dict'])
    assert any('large_kernel.fused_vertical.weight' in k for k in keys)
    assert not any('large_kernel.small.' in k for k in keys)

    # Loads back through the config with the deploy option.
    deployed, _ = build_model_from_config(
        config, {'model.backbone.deploy': True}
    )
    load_checkpoint_strict(deployed, out)
    batch = make_test_batch((40, 56), batch_size=3, seed=1)
    reference = outputs(original.eval(), batch)
    max_abs, rel = relative_difference(reference, outputs(deployed, batch))
    assert rel <= 1e-5, rel
    assert reference[0].abs().max() > 1e-2

    # Without the option the file does not fit and the error says why.
    plain, _ = build_model_from_config(config)
    with pytest.raises(KeyError, match='deploy=True'):
        load_checkpoint_strict(plain, out)


def test_keep_extra_keeps_mask_state(tmp_path, trained):
    config, path, _ = trained
    out = str(tmp_path / 'deployed_extra.pth')
    report = load_tool('deploy').main(
        [config, path, out, '--shape', '32', '--keep-extra']
    )
    saved = safe_torch_load(out)
    assert report['kept_extra'] == ['optimizer', 'sparse_masks']
    assert saved['sparse_masks'] == {
        'backbone.stages.0.0.pointwise_conv1.weight': 1
    }


def test_deploy_refuses_a_broken_fusion(tmp_path, trained, monkeypatch):
    config, path, _ = trained
    from slak_mm.converters import deploy

    real_switch = deploy.switch_backbone_to_deploy

    def switch_with_error(model):
        real_switch(model)
        # E.g. a fusion that forgets a term: one fused bias is off.
        fused = model.backbone.stages[1][0].large_kernel.fused_horizontal
        fused.bias.data += torch.linspace(0, 0.5, fused.bias.numel())

    monkeypatch.setattr(deploy, 'switch_backbone_to_deploy', switch_with_error)
    out = tmp_path / 'never.pth'
    with pytest.raises(RuntimeError, match='not saved'):
        load_tool('deploy').main([config, path, str(out), '--shape', '32'])
    assert not out.exists()


def test_wrong_checkpoint_is_named(tmp_path, trained):
    config, _, _ = trained
    other = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict={'backbone.foo': torch.zeros(1)}), other)
    with pytest.raises(KeyError, match='other.pth'):
        load_tool('deploy').main(
            [config, other, str(tmp_path / 'x.pth'), '--shape', '32']
        )


def test_nan_weight_fails_the_tool_naming_the_tensor(tmp_path, trained):
    config, path, _ = trained
    checkpoint = safe_torch_load(path)
    key = 'backbone.stages.1.0.large_kernel.vertical.conv.weight'
    checkpoint['state_dict'][key].view(-1)[3] = float('nan')
    bad = str(tmp_path / 'one_nan.pth')
    torch.save(checkpoint, bad)
    out = tmp_path / 'never.pth'
    result = subprocess.run(
        [sys.executable, tool_path('deploy'), config, bad, str(out)]
        + ['--shape', '32'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"tensor '{key}'" in result.stderr
    assert 'holds 1 NaN and 0 infinite values' in result.stderr
    assert 'max abs diff' not in result.stdout
    assert not out.exists()


def test_infinite_running_var_fails_in_process(tmp_path, trained):
    config, path, _ = trained
    checkpoint = safe_torch_load(path)
    key = 'backbone.stages.0.0.large_kernel.small.bn.running_var'
    checkpoint['state_dict'][key][0] = float('inf')
    bad = str(tmp_path / 'inf.pth')
    torch.save(checkpoint, bad)
    with pytest.raises(ValueError, match=f'{key}.*0 NaN and 1 infinite'):
        load_tool('deploy').main([config, bad, str(tmp_path / 'o.pth')])


def test_non_finite_outputs_are_not_dropped_by_the_maximum():
    reference = [torch.ones(2, 3), torch.ones(4)]
    deployed = [torch.ones(2, 3), torch.tensor([1.0, float('nan'), 1, 1])]
    with pytest.raises(ValueError, match="deployed model output '#1'.*1 NaN"):
        relative_difference(reference, deployed)
    with pytest.raises(ValueError, match="original model output '#0'"):
        relative_difference(
            [torch.full((2, 3), float('inf')), torch.ones(4)], reference
        )
    assert relative_difference(reference, reference) == (0.0, 0.0)

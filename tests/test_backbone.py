import dataclasses

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from slak_mm.models import DropPath, SLaK
from slak_mm.models.settings import SLaKArchSettings

from .helpers import TINY_ARCH, randomize_batch_norms

# Released parameter counts at width 1.3, kernels 51/49/47/13, small 5.
CLASSIFIER_PARAMS = dict(tiny=50_703_838, small=91_131_820, base=157_950_792)
DOWNSTREAM_PARAMS = dict(tiny=49_706_582, small=90_134_564, base=156_621_118)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_parameter_counts_match_release(arch):
    downstream = SLaK(arch=arch, out_indices=(0, 1, 2, 3))
    assert count(downstream) == DOWNSTREAM_PARAMS[arch]
    backbone = SLaK(arch=arch, out_indices=3, gap_before_final_norm=True)
    head = torch.nn.Linear(backbone.channels[-1], 1000)
    assert count(backbone) + count(head) == CLASSIFIER_PARAMS[arch]


@pytest.mark.parametrize(
    'arch, channels',
    [
        ('tiny', [124, 249, 499, 998]),
        ('s', [124, 249, 499, 998]),
        ('b', [166, 332, 665, 1331]),
    ],
)
def test_widths_truncate_like_release(arch, channels):
    assert (
        SLaK(arch=arch, kernel_sizes=(3, 3, 3, 3), small_kernel=3).channels
        == channels
    )


def test_slak_t_full_forward_224():
    model = SLaK(arch='tiny', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [
        (1, 124, 56, 56),
        (1, 249, 28, 28),
        (1, 499, 14, 14),
        (1, 998, 7, 7),
    ]


@pytest.mark.parametrize('arch', ['small', 'base'])
def test_small_and_base_classification_forward(arch):
    model = SLaK(
        arch=arch, out_indices=3, gap_before_final_norm=True, width_factor=0.25
    ).eval()
    with torch.no_grad():
        (out,) = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, model.channels[-1])


@pytest.mark.parametrize(
    'size, expected',
    [
        ((37, 53), [(9, 13), (4, 6), (2, 3), (1, 1)]),
        ((512, 512), [(128, 128), (64, 64), (32, 32), (16, 16)]),
        ((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ],
)
def test_output_sizes_any_input(size, expected):
    model = SLaK(arch=TINY_ARCH, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[2:]) for o in outs] == expected
    assert [o.shape[1] for o in outs] == model.channels
    assert all(torch.isfinite(o).all() for o in outs)


def test_out_indices_and_norms():
    model = SLaK(arch=TINY_ARCH, out_indices=(1, -1))
    assert model.out_indices == [1, 3]
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3')
    assert not hasattr(model, 'norm0')
    with pytest.raises(ValueError, match='out of range'):
        SLaK(arch=TINY_ARCH, out_indices=(4,))


def test_classification_mode_pools_then_norms():
    model = SLaK(
        arch=TINY_ARCH, out_indices=-1, gap_before_final_norm=True
    ).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        (pooled,) = model(x)
        model.gap_before_final_norm = False
        (spatial,) = model(x)
    assert pooled.shape == (2, 41)
    assert spatial.shape == (2, 41, 2, 1)


@pytest.mark.parametrize('decompose', [True, False])
def test_backbone_deploy_equivalence(decompose):
    model = SLaK(
        arch=TINY_ARCH,
        kernel_sizes=(31, 29, 27, 13),
        decompose=decompose,
        out_indices=(0, 1, 2, 3),
        layer_scale_init_value=1.0,
    )
    randomize_batch_norms(model)
    model.eval()
    x = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        expected = model(x)
        n_before = len(list(model.modules()))
        model.switch_to_deploy()
        outs = model(x)
    assert len(list(model.modules())) < n_before
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    # A model built in deploy form takes the fused weights directly.
    built = SLaK(
        arch=TINY_ARCH,
        kernel_sizes=(31, 29, 27, 13),
        decompose=decompose,
        out_indices=(0, 1, 2, 3),
        deploy=True,
    )
    built.load_state_dict(model.state_dict())
    with torch.no_grad():
        for out, ref in zip(built.eval()(x), expected):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_frozen_stages():
    model = SLaK(arch=TINY_ARCH, out_indices=(0, 1, 2, 3), frozen_stages=2)
    model.train()
    for i in range(2):
        for module in (
            model.downsample_layers[i],
            model.stages[i],
            getattr(model, f'norm{i}'),
        ):
            assert not module.training
            assert all(not p.requires_grad for p in module.parameters())
    for i in range(2, 4):
        assert model.stages[i].training
        assert all(p.requires_grad for p in model.stages[i].parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        SLaK(arch=TINY_ARCH, frozen_stages=5)


def test_norm_eval_keeps_bn_in_eval():
    model = SLaK(arch=TINY_ARCH, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not bn.training for bn in bns)
    assert model.stages[0][0].pointwise_conv1.training
    model = SLaK(arch=TINY_ARCH, norm_eval=False).train()
    assert all(
        m.training for m in model.modules() if isinstance(m, _BatchNorm)
    )


def test_with_cp_matches_plain_gradients():
    torch.manual_seed(1)
    plain = SLaK(arch=TINY_ARCH, kernel_sizes=(13, 11, 9, 7))
    ckpt = SLaK(arch=TINY_ARCH, kernel_sizes=(13, 11, 9, 7), with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, ckpt):
        model.train()
        sum(o.sum() for o in model(x)).backward()
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)


def test_drop_path_rates_increase():
    model = SLaK(arch=TINY_ARCH, drop_path_rate=0.4)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.4)
    assert rates == sorted(rates)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(arch='huge'), ValueError, 'Unknown SLaK arch'),
        (dict(arch=dict(depths=[1, 1])), ValueError, 'channels'),
        (dict(kernel_sizes=(51, 49, 47, 13, 5)), ValueError, 'small_kernel'),
        (dict(kernel_sizes=(50, 49, 47, 13)), ValueError, 'odd'),
        (dict(drop_path_rate=1.5), ValueError, 'drop_path_rate'),
    ],
)
def test_bad_config_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        SLaK(**kwargs)


@pytest.mark.parametrize(
    'kwargs, error, match',
    [
        (dict(width_factor='1.3'), TypeError, "width_factor.*'1.3'"),
        (dict(width_factor=0), ValueError, 'width_factor=0'),
        (dict(width_factor=-1.0), ValueError, 'width_factor'),
        (dict(width_factor=float('nan')), ValueError, 'width_factor=nan'),
        (dict(width_factor=float('inf')), ValueError, 'width_factor=inf'),
        (dict(width_factor=0.001), ValueError, 'at least one channel'),
        (dict(kernel_sizes=13), TypeError, 'kernel_sizes.*13'),
        (dict(kernel_sizes='51'), TypeError, 'kernel_sizes'),
        (dict(kernel_sizes=(13.0, 11, 9, 7)), TypeError, 'kernel_sizes'),
        (dict(kernel_sizes=(13, -11, 9, 7)), ValueError, 'kernel_sizes'),
        (dict(small_kernel=3.0), TypeError, 'small_kernel'),
        (
            dict(arch=dict(depths=[1, -1, 1, 1], channels=[8, 8, 8, 8])),
            ValueError,
            'depths',
        ),
        (
            dict(arch=dict(depths=[1, 1, 1, 1], channels=[8, 0, 8, 8])),
            ValueError,
            'channels',
        ),
        (dict(arch=dict(depths=[], channels=[])), ValueError, 'no stages'),
        (dict(arch=dict(depths=3, channels=8)), TypeError, 'depths'),
        (dict(out_indices=[]), ValueError, 'out_indices is empty'),
        (dict(out_indices='0'), TypeError, 'out_indices'),
        (dict(in_channels=0), ValueError, 'in_channels'),
        (dict(in_channels='3'), ValueError, 'in_channels'),
    ],
)
def test_bad_argument_types_are_named(kwargs, error, match):
    kwargs.setdefault('arch', TINY_ARCH)
    with pytest.raises(error, match=match):
        SLaK(**kwargs)


def test_zero_depth_stage_and_int_width_factor_still_build():
    model = SLaK(
        arch=dict(depths=[1, 0, 1, 1], channels=[8, 8, 8, 8]), width_factor=2
    )
    assert model.channels == [16, 16, 16, 16]
    assert len(model.stages[1]) == 0


def test_minimum_input_size_is_named():
    model = SLaK(arch=TINY_ARCH, out_indices=(0, 1, 2, 3)).eval()
    assert model.min_input_size == 32
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 33))
    assert [tuple(o.shape[2:]) for o in outs][-1] == (1, 1)
    for size in ((31, 64), (64, 31), (16, 16)):
        with pytest.raises(ValueError, match='at least 32 pixels') as info:
            model(torch.randn(1, 3, *size))
        assert f'{size[0]}x{size[1]}' in str(info.value)
    # Fewer stages need less: 4 * 2 ** (stages - 1).
    two_stages = SLaK(
        arch=dict(depths=[1, 1], channels=[8, 16]),
        kernel_sizes=(7, 5),
        small_kernel=3,
    ).eval()
    assert two_stages.min_input_size == 8
    with torch.no_grad():
        (out,) = two_stages(torch.randn(1, 3, 8, 8))
    assert out.shape[2:] == (1, 1)
    with pytest.raises(ValueError, match='at least 8 pixels'):
        two_stages(torch.randn(1, 3, 7, 8))


def test_default_init_is_truncated_normal():
    model = SLaK(arch=TINY_ARCH)
    model.init_weights()
    weight = model.stages[2][0].pointwise_conv1.weight
    assert 0.017 < weight.std() < 0.023
    assert abs(weight.mean()) < 0.002
    assert model.stages[2][0].pointwise_conv1.bias.abs().sum() == 0


def test_arch_settings_are_checked_once_and_frozen():
    """The backbone builds from one checked, normalised settings object."""
    settings = SLaKArchSettings(
        arch='s', kernel_sizes=(13, 11, 9, 7), out_indices=(3, -1, 0)
    )
    assert settings.depths == [3, 3, 27, 3]
    assert settings.channels == [124, 249, 499, 998]
    assert (settings.kernel_sizes, settings.out_indices) == (
        [13, 11, 9, 7],
        [0, 3],
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.width_factor = 2.0
    # A copy with a change is checked again.
    with pytest.raises(ValueError, match='frozen_stages must be in'):
        dataclasses.replace(settings, frozen_stages=5)
    model = SLaK(arch=TINY_ARCH, out_indices=(-1, 1), frozen_stages=1)
    assert model.settings == SLaKArchSettings(
        arch=TINY_ARCH, out_indices=(-1, 1), frozen_stages=1
    )
    assert (model.out_indices, model.channels) == (
        model.settings.out_indices,
        model.settings.channels,
    )
    # The stochastic depth rate is checked by the one range check that
    # also guards DropPath.
    with pytest.raises(ValueError, match=r'drop_prob must be in \[0, 1\)'):
        DropPath(1.0)
    with pytest.raises(
        ValueError, match=r'drop_path_rate must be in \[0, 1\), got -0.1'
    ):
        SLaKArchSettings(drop_path_rate=-0.1)

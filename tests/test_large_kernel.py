import pytest
import torch

from slak_mm.models.large_kernel import (
    LargeKernelConv,
    fuse_conv_bn,
    pad_kernel_to,
)

from .helpers import randomize_batch_norms


def naive_depthwise(x, weight, bias=None):
    """Tap-by-tap "same" depthwise correlation, zero outside the map.

    Args:
        x: (N, C, H, W); weight: (C, 1, kh, kw) with odd kh, kw.
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    ph, pw = kh // 2, kw // 2
    out = torch.zeros_like(x, dtype=torch.float64)
    x64 = x.double()
    for a in range(kh):
        for b in range(kw):
            dy, dx = a - ph, b - pw
            # out[i, j] += w[a, b] * x[i + dy, j + dx]
            ys, ye = max(0, -dy), min(h, h - dy)
            xs, xe = max(0, -dx), min(w, w - dx)
            if ys >= ye or xs >= xe:
                continue
            out[:, :, ys:ye, xs:xe] += (
                weight[:, 0, a, b].double().view(1, c, 1, 1)
                * x64[:, :, ys + dy : ye + dy, xs + dx : xe + dx]
            )
    if bias is not None:
        out += bias.double().view(1, c, 1, 1)
    return out


def branch_reference(branch, x):
    weight, bias = fuse_conv_bn(branch.conv.weight, branch.bn)
    return naive_depthwise(x, weight, bias)


@pytest.mark.parametrize('size', [(3, 4), (7, 7), (12, 9), (1, 1)])
@pytest.mark.parametrize('decompose', [True, False])
def test_large_kernel_matches_naive_reference(size, decompose):
    """Exact "same" padding per axis, also when K exceeds the map."""
    module = LargeKernelConv(6, 13, 5, decompose=decompose)
    randomize_batch_norms(module)
    module.eval()
    x = torch.randn(2, 6, *size)
    with torch.no_grad():
        out = module(x)
        names = (
            ['vertical', 'horizontal', 'small']
            if decompose
            else ['large', 'small']
        )
        expected = sum(branch_reference(getattr(module, n), x) for n in names)
    assert out.shape == x.shape
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_strip_shapes_and_padding():
    module = LargeKernelConv(4, 51, 5)
    assert module.vertical.conv.weight.shape == (4, 1, 51, 5)
    assert module.horizontal.conv.weight.shape == (4, 1, 5, 51)
    assert module.small.conv.weight.shape == (4, 1, 5, 5)
    assert module.vertical.conv.padding == (25, 2)
    assert module.horizontal.conv.padding == (2, 25)
    assert module.vertical.conv.bias is None


@pytest.mark.parametrize('decompose', [True, False])
def test_deploy_equivalence_and_fewer_modules(decompose):
    module = LargeKernelConv(5, 11, 3, decompose=decompose)
    randomize_batch_norms(module)
    module.eval()
    x = torch.randn(2, 5, 9, 6)
    with torch.no_grad():
        expected = module(x)
    n_before = len(list(module.modules()))
    module.switch_to_deploy()
    assert module.deploy
    assert len(list(module.modules())) < n_before
    if decompose:
        assert module.fused_vertical.weight.shape == (5, 1, 11, 3)
        assert module.fused_horizontal.weight.shape == (5, 1, 3, 11)
        assert not hasattr(module, 'small')
    else:
        assert module.fused_large.weight.shape == (5, 1, 11, 11)
    with torch.no_grad():
        out = module(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_pad_kernel_to_centres():
    kernel = torch.arange(9.0).view(1, 1, 3, 3)
    padded = pad_kernel_to(kernel, 7, 3)
    assert padded.shape == (1, 1, 7, 3)
    torch.testing.assert_close(padded[0, 0, 2:5], kernel[0, 0])
    assert (
        padded[0, 0, :2].abs().sum() == 0 and padded[0, 0, 5:].abs().sum() == 0
    )


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(kernel_size=12, small_kernel=5), 'odd'),
        (dict(kernel_size=13, small_kernel=4), 'odd'),
        (dict(kernel_size=3, small_kernel=5), 'must not exceed'),
        (
            dict(kernel_size=13, small_kernel=5, norm_cfg=dict(type='GN')),
            'norm_cfg type',
        ),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LargeKernelConv(4, **kwargs)


def test_sync_bn_is_selectable():
    module = LargeKernelConv(4, 7, 3, norm_cfg=dict(type='SyncBN'))
    assert isinstance(module.vertical.bn, torch.nn.SyncBatchNorm)

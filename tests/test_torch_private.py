"""Pins the signatures of the private PyTorch ops behind
:mod:`slak_mm.models.backends.torch_private` against standard ops.

A PyTorch release that renames an op or changes its positional arguments
fails here (or skips, when the op is gone and the backends that need it say
they are unavailable), not in a model's forward.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from slak_mm.models.backends import FastCPUBackend, torch_private

from .helpers import AVX2_CAPS, relative_close


def needs(name):
    return pytest.mark.skipif(
        not torch_private.available(name),
        reason=f'this torch build lacks op {name!r}',
    )


def test_unknown_wrapper_is_named():
    with pytest.raises(KeyError, match="'conv_sum'"):
        torch_private.available('conv_sum')


def test_fast_backend_available_iff_its_ops_are():
    expected = all(
        torch_private.available(n)
        for n in ('conv_add', 'linear', 'gelu_backward')
    )
    assert FastCPUBackend.available() == expected


# oneDNN picks its convolution and GEMM kernels per instruction set.
@pytest.mark.cpu_capability
@needs('conv_add')
@pytest.mark.parametrize('groups', [1, 6])
def test_conv_add_is_sum_plus_conv(groups):
    channels_last = dict(memory_format=torch.channels_last)
    x = torch.randn(2, 6, 9, 11).contiguous(**channels_last)
    other = torch.randn(2, 6, 9, 11).contiguous(**channels_last)
    weight = torch.randn(6, 6 // groups, 3, 7)
    bias = torch.randn(6)
    kept = other.clone()
    out = torch_private.conv_add(x, other, weight, bias, (1, 3), groups)
    expected = other + F.conv2d(x, weight, bias, padding=(1, 3), groups=groups)
    relative_close(out, expected)
    assert out.shape == expected.shape
    torch.testing.assert_close(other, kept, rtol=0, atol=0)
    no_bias = torch_private.conv_add(x, other, weight, None, (1, 3), groups)
    relative_close(
        no_bias, other + F.conv2d(x, weight, padding=(1, 3), groups=groups)
    )


@pytest.mark.cpu_capability
@needs('linear')
@pytest.mark.parametrize('approximate', [None, 'none', 'tanh'])
def test_linear_is_linear_then_gelu(approximate):
    x = torch.randn(10, 12)
    weight = torch.randn(20, 12)
    bias = torch.randn(20)
    expected = F.linear(x, weight, bias)
    if approximate is not None:
        expected = F.gelu(expected, approximate=approximate)
    relative_close(
        torch_private.linear(x, weight, bias, approximate), expected
    )
    # Transposed (non-contiguous) weights, no bias: the backward's use.
    relative_close(
        torch_private.linear(x, weight.t().contiguous().t()),
        F.linear(x, weight),
    )
    relative_close(
        torch_private.linear(expected, weight.t()), expected @ weight
    )


@needs('gelu_backward')
@pytest.mark.parametrize('approximate', ['none', 'tanh'])
def test_gelu_backward_matches_autograd(approximate):
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(50, dtype=torch.float64)
    (expected,) = torch.autograd.grad(
        F.gelu(x, approximate=approximate), x, grad_out
    )
    actual = torch_private.gelu_backward(grad_out, x.detach(), approximate)
    torch.testing.assert_close(actual, expected)


@pytest.mark.cpu_capability
@needs('bf16_supported')
def test_bf16_kernels_where_onednn_reports_them():
    if not torch_private.onednn_supports(torch.bfloat16):
        pytest.skip(
            'oneDNN reports no bf16 support on this CPU '
            '(no AVX512-BF16 or AMX)'
        )
    x = torch.randn(8, 16)
    weight = torch.randn(4, 16)
    out = torch_private.linear(x.bfloat16(), weight.bfloat16())
    assert out.dtype == torch.bfloat16
    relative_close(out, F.linear(x, weight), rtol=2e-2)


def test_onednn_supports_only_floating_types_it_knows():
    assert torch_private.onednn_supports(torch.float32) == (
        torch.backends.mkldnn.is_available()
    )
    assert not torch_private.onednn_supports(torch.float64)
    assert not torch_private.onednn_supports(torch.int8)


def capabilities_seen(caps):
    """ATen's CPU capability and oneDNN's bf16 / fp16 support as a fresh
    process sees them with ``caps`` in its environment (and no other
    caps: an uncapped view even inside ``make test-avx2``)."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2_CAPS}
    env.update(caps)
    # torch_private.py alone (it imports only torch): slak_mm's __init__
    # would import the toolkits, seconds per process.
    probe = (
        'import importlib.util, sys, torch\n'
        'spec = importlib.util.spec_from_file_location("torch_private",'
        ' sys.argv[1])\n'
        'torch_private = importlib.util.module_from_spec(spec)\n'
        'spec.loader.exec_module(torch_private)\n'
        'print(torch.backends.cpu.get_cpu_capability(),'
        ' torch_private.onednn_supports(torch.bfloat16),'
        ' torch_private.onednn_supports(torch.float16))'
    )
    result = subprocess.run(
        [sys.executable, '-c', probe, torch_private.__file__],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    aten, bf16, fp16 = result.stdout.split()
    return aten, bf16 == 'True', fp16 == 'True'


@pytest.mark.cpu_capability
def test_avx2_caps_take_away_avx512_and_onednn_bf16():
    """The caps of `make test-avx2` really give the AVX2-only view."""
    uncapped_aten, uncapped_bf16, _ = capabilities_seen({})
    capped_aten, capped_bf16, capped_fp16 = capabilities_seen(AVX2_CAPS)
    # 'AVX2' (or 'DEFAULT' on a CPU below AVX2), never an AVX-512 level.
    assert capped_aten in ('AVX2', 'DEFAULT'), capped_aten
    assert not capped_fp16  # AVX512-FP16 / AVX-NE-CONVERT capped away too
    if not uncapped_bf16:
        pytest.skip(
            'oneDNN reports no bf16 on this CPU even uncapped (no '
            f'AVX512-BF16 or AMX; ATen {uncapped_aten}): the caps have '
            'nothing to take away'
        )
    assert not capped_bf16

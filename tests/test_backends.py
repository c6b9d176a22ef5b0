"""Every fast path equals the release-style reference, outputs and grads.

Shapes cover every (kernel, feature map) pair SLaK-T/S/B meet at 224 and
512 (maps 56/28/14/7 and 128/64/32/16 for kernels 51/49/47/13, small 5),
odd maps, and maps smaller than the kernel; channels are few to stay fast.
"""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from slak_mm.models import SLaK, SLaKBlock
from slak_mm.models.backends import (
    Backend,
    backend_names,
    get_backend,
    reachable_kernel,
    resolve_backend,
    set_backend,
    use_backend,
)
from slak_mm.models.backends.fast_cpu import (
    conv_grad_weight,
    depthwise_conv_same,
)
from slak_mm.models.large_kernel import LargeKernelConv

from .helpers import (
    TINY_ARCH,
    cpu_backends,
    randomize_batch_norms,
    relative_close,
    run_module,
)

FAST_BACKENDS = cpu_backends()

# (kernel K, feature map H, W) of T/S/B stages at 224 and 512, plus odd maps.
STAGE_SHAPES = [
    (51, 56, 56),
    (49, 28, 28),
    (47, 14, 14),
    (13, 7, 7),
    (51, 128, 128),
    (49, 64, 64),
    (47, 32, 32),
    (13, 16, 16),
    (51, 37, 53),
    (47, 9, 13),
    (13, 3, 5),
    (49, 1, 2),
]


# oneDNN's depthwise convs against ATen's, each picking kernels per
# instruction set (AVX2, AVX-512).
@pytest.mark.cpu_capability
@pytest.mark.parametrize('kernel, height, width', STAGE_SHAPES)
@pytest.mark.parametrize('kernel_size', ['strip', 'small'])
def test_depthwise_conv_matches_conv2d(kernel, height, width, kernel_size):
    """The bare conv, for the K x 5, 5 x K and 5 x 5 kernels."""
    shapes = [(kernel, 5), (5, kernel)] if kernel_size == 'strip' else [(5, 5)]
    for kh, kw in shapes:
        x = torch.randn(2, 3, height, width)
        weight = torch.randn(3, 1, kh, kw)
        bias = torch.randn(3)
        expected_x = x.clone().requires_grad_(True)
        expected_w = weight.clone().requires_grad_(True)
        expected_b = bias.clone().requires_grad_(True)
        expected = F.conv2d(
            expected_x,
            expected_w,
            expected_b,
            padding=(kh // 2, kw // 2),
            groups=3,
        )
        grad_out = torch.randn_like(expected)
        expected.backward(grad_out)
        for name in FAST_BACKENDS:
            fast_x = x.contiguous(memory_format=torch.channels_last)
            fast_x.requires_grad_(True)
            fast_w = weight.clone().requires_grad_(True)
            fast_b = bias.clone().requires_grad_(True)
            backend = get_backend(name, fast_x.device)
            out = backend.depthwise_conv(fast_x, fast_w, fast_b)
            out.backward(grad_out)
            relative_close(out, expected)
            relative_close(fast_x.grad, expected_x.grad)
            relative_close(fast_w.grad, expected_w.grad)
            relative_close(fast_b.grad, expected_b.grad)
            assert fast_w.grad.shape == weight.shape


@pytest.mark.cpu_capability
@pytest.mark.parametrize('kernel, height, width', STAGE_SHAPES)
def test_conv_sum_and_accumulate_match_conv2d(kernel, height, width):
    """The eval path sums the two strips (on 'fast' inside oneDNN's conv,
    its sum post-op); ``accumulate`` adds to one conv without changing."""
    x = torch.randn(2, 5, height, width)
    accumulate = torch.randn(2, 5, height, width)
    weight = torch.randn(5, 1, 5, kernel)
    bias = torch.randn(5)
    vertical = torch.randn(5, 1, kernel, 3)
    expected = accumulate + F.conv2d(
        x, weight, bias, padding=(2, kernel // 2), groups=5
    )
    expected_sum = (
        expected
        - accumulate
        + F.conv2d(x, vertical, None, padding=(kernel // 2, 1), groups=5)
    )
    channels_last = dict(memory_format=torch.channels_last)
    for name in cpu_backends(include_reference=True):
        backend = get_backend(name, x.device)
        for grad in (False, True):
            acc = accumulate.contiguous(**channels_last).clone()
            with torch.set_grad_enabled(grad):
                out = backend.depthwise_conv(
                    x.contiguous(**channels_last),
                    weight.requires_grad_(grad),
                    bias,
                    acc,
                )
                out_sum = backend.depthwise_conv_sum(
                    x.contiguous(**channels_last),
                    [(vertical, None), (weight, bias)],
                )
            relative_close(out, expected)
            relative_close(out_sum, expected_sum)
            torch.testing.assert_close(
                acc, accumulate, rtol=0, atol=0, msg='accumulate changed'
            )


@pytest.mark.parametrize('kernel, height, width', STAGE_SHAPES)
@pytest.mark.parametrize('train', [True, False])
def test_large_kernel_module_matches_reference(kernel, height, width, train):
    """Whole module: BN in batch-statistics mode or folded (eval mode)."""
    reference = LargeKernelConv(4, kernel, 5)
    randomize_batch_norms(reference)
    reference.train(train)
    x = torch.randn(2, 4, height, width)
    grad_out = torch.randn(2, 4, height, width)
    expected, expected_grads = run_module(
        copy.deepcopy(reference), x, grad_out, 'reference'
    )
    for name in FAST_BACKENDS:
        module = copy.deepcopy(reference)
        out, grads = run_module(module, x, grad_out, name)
        relative_close(out, expected)
        assert grads.keys() == expected_grads.keys()
        for name in grads:
            relative_close(grads[name], expected_grads[name])


@pytest.mark.parametrize('decompose', [True, False])
def test_deploy_and_not_decomposed_match_reference(decompose):
    reference = LargeKernelConv(4, 13, 5, decompose=decompose)
    randomize_batch_norms(reference)
    reference.eval()
    fast = copy.deepcopy(reference)
    x = torch.randn(2, 4, 11, 6)
    with torch.no_grad():
        expected = reference(x, 'reference')
        relative_close(fast(x), expected)
        reference.switch_to_deploy()
        fast.switch_to_deploy()
        relative_close(reference(x, 'reference'), expected)
        relative_close(fast(x), expected)


@pytest.mark.cpu_capability
def test_backbone_outputs_and_gradients_match_reference():
    """A narrow SLaK with SLaK-T kernels: all blocks, stem and downsamples."""
    torch.manual_seed(3)
    reference = SLaK(
        arch=TINY_ARCH,
        out_indices=(0, 1, 2, 3),
        layer_scale_init_value=1.0,
        backend='reference',
    )
    randomize_batch_norms(reference)
    fast = SLaK(
        arch=TINY_ARCH, out_indices=(0, 1, 2, 3), layer_scale_init_value=1.0
    )
    assert fast.backend == 'auto'
    fast.load_state_dict(reference.state_dict())
    assert list(fast.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 3, 75, 61)
    for model in (reference, fast):
        model.train()
        outs = model(x)
        sum(
            (o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
            for o in outs
        ).backward()
    for name, param in fast.named_parameters():
        relative_close(
            param.grad, dict(reference.named_parameters())[name].grad
        )
    with torch.no_grad():
        for out, ref in zip(fast.eval()(x), reference.eval()(x)):
            assert out.is_contiguous()
            relative_close(out, ref)


def test_masked_weights_stay_masked_and_get_gradients():
    """What the sparse code relies on: in-place masks and ``.grad``."""
    module = LargeKernelConv(3, 13, 5)
    weight = module.vertical.conv.weight
    mask = torch.rand_like(weight) > 0.5
    with torch.no_grad():
        weight.mul_(mask)
    reference = copy.deepcopy(module)
    x = torch.randn(2, 3, 9, 9)
    module(x).square().sum().backward()
    reference(x, 'reference').square().sum().backward()
    assert weight.grad is not None and weight.grad.shape == weight.shape
    relative_close(weight.grad, reference.vertical.conv.weight.grad)


def test_reachable_kernel_crops_exactly():
    weight = torch.randn(2, 1, 51, 5)
    assert reachable_kernel(weight, 56, 56) is weight
    cropped = reachable_kernel(weight, 14, 2)
    assert cropped.shape == (2, 1, 27, 3)
    torch.testing.assert_close(cropped, weight[:, :, 12:39, 1:4])


@pytest.mark.parametrize('kernel_size', [(19, 3), (3, 19), (5, 5), (1, 3)])
def test_conv_grad_weight_matches_autograd(kernel_size):
    kh, kw = kernel_size
    x = torch.randn(3, 2, 10, 7, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(2, 1, kh, kw, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(x, weight, padding=(kh // 2, kw // 2), groups=2)
    grad_out = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, weight, grad_out)
    actual = conv_grad_weight(x, grad_out, kernel_size)
    torch.testing.assert_close(actual, expected)


def test_eval_fold_follows_every_parameter_change():
    """The eval-mode fold sees in-place updates, also those made through
    ``.data`` (no version bump), as mmengine's EMAHook swaps weights."""
    reference = LargeKernelConv(4, 13, 5)
    randomize_batch_norms(reference)
    reference.eval()
    fast = copy.deepcopy(reference)
    x = torch.randn(2, 4, 9, 8)
    with torch.no_grad():
        relative_close(fast(x), reference(x, 'reference'))
        for module in (reference, fast):
            module.vertical.conv.weight.data.add_(0.5)
            module.horizontal.bn.bias.data.sub_(1.0)
        relative_close(fast(x), reference(x, 'reference'))
        for module in (reference, fast):
            module.small.bn.running_var.mul_(2.0)
        relative_close(fast(x), reference(x, 'reference'))
        fast.load_state_dict(LargeKernelConv(4, 13, 5).state_dict())
        reference.load_state_dict(fast.state_dict())
        relative_close(fast(x), reference(x, 'reference'))
    # With gradients on, the convs get the reference's gradients through
    # the fold.
    fast(x).sum().backward()
    reference(x, 'reference').sum().backward()
    for name in ('vertical.conv.weight', 'small.conv.weight'):
        relative_close(
            fast.get_parameter(name).grad, reference.get_parameter(name).grad
        )


def test_custom_backward_is_used_and_checks_gradients():
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 11, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    out = get_backend('fast', x.device).depthwise_conv(x, weight, bias)
    assert 'depthwise_conv_same' in type(out.grad_fn).__name__
    assert torch.autograd.gradcheck(
        depthwise_conv_same, (x, reachable_kernel(weight, 6, 5), bias)
    )


def test_backend_choices_resolve_once():
    assert get_backend('auto', torch.device('cpu')).name == 'fast'
    from slak_mm.ops import triton_dwconv

    on_cuda = 'triton' if triton_dwconv.available('cuda') else 'native'
    assert get_backend('auto', torch.device('cuda')).name == on_cuda
    assert {'auto', 'reference', 'native', 'fast', 'triton'} <= set(
        backend_names()
    )
    assert get_backend('native', 'cpu') is get_backend('native', 'cpu')
    with pytest.raises(ValueError, match="backend must be one of.*'cutlass'"):
        SLaK(arch=TINY_ARCH, backend='cutlass')
    with pytest.raises(ValueError, match="'fast' runs on .*cpu.*cuda"):
        get_backend('fast', torch.device('cuda'))
    model = SLaK(arch=TINY_ARCH, backend='reference')
    assert model.backend == 'reference'
    assert "backend='reference'" in repr(model)
    assert isinstance(get_backend('reference', 'cpu'), Backend)
    reference = get_backend('reference', 'cpu')
    assert resolve_backend(reference, 'cpu') is reference
    assert resolve_backend(None, 'cpu') is get_backend('auto', 'cpu')
    assert resolve_backend('native', 'cpu') is get_backend('native', 'cpu')


def test_set_and_use_backend_switch_every_module():
    model = SLaK(arch=TINY_ARCH)
    holders = [m for m in model.modules() if hasattr(m, 'backend')]
    # The backbone alone: its blocks and large-kernel modules hold none.
    assert holders == [model]
    for module in model.modules():
        if isinstance(module, (LargeKernelConv, SLaKBlock)):
            assert 'backend' not in module.extra_repr()
    with use_backend(model, 'reference'):
        assert {m.backend for m in holders} == {'reference'}
    assert {m.backend for m in holders} == {'auto'}
    set_backend(model, 'native')
    assert {m.backend for m in holders} == {'native'}
    with pytest.raises(ValueError, match='backend must be one of'):
        set_backend(model, 'nope')
    # Inner modules alone take the backend in their forward; switching
    # them would silently change nothing.
    for inner in (model.stages[0][0], model.stages[0][0].large_kernel):
        with pytest.raises(ValueError, match='set_backend: .* no backend'):
            set_backend(inner, 'reference')
        with pytest.raises(ValueError, match='use_backend: .* no backend'):
            with use_backend(inner, 'reference'):
                pass
    # A model without SLaK modules is left as it is.
    set_backend(nn.Linear(2, 2), 'reference')


def test_outputs_do_not_depend_on_the_backend_of_construction():
    """A model built with one backend and switched equals one built with
    the other (same parameters, same state-dict keys)."""
    reference = SLaK(arch=TINY_ARCH, backend='reference').eval()
    randomize_batch_norms(reference)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        expected = reference(x)[0]
        for name in FAST_BACKENDS:
            model = SLaK(arch=TINY_ARCH, backend=name).eval()
            model.load_state_dict(reference.state_dict())
            relative_close(model(x)[0], expected)


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the backend registry, restored (and the resolution cache
    cleared) after the test."""
    from slak_mm.models.backends import base

    monkeypatch.setattr(base, '_BACKENDS', dict(base._BACKENDS))
    base._resolve.cache_clear()
    yield base
    monkeypatch.undo()
    base._resolve.cache_clear()


def test_auto_skips_a_backend_whose_ops_are_missing(
    isolated_registry, monkeypatch
):
    from slak_mm.models.backends import torch_private

    monkeypatch.setattr(torch_private, 'available', lambda name: False)
    assert get_backend('auto', 'cpu').name == 'native'
    with pytest.raises(RuntimeError, match="'fast' is not available"):
        get_backend('fast', 'cpu')


def test_a_new_backend_is_one_registered_class(isolated_registry):
    """What adding e.g. a Triton backend takes: a class, registered."""
    from slak_mm.models.backends import NativeBackend, register_backend

    calls = []

    @register_backend
    class CountingBackend(NativeBackend):
        name = 'counting'
        device_types = ('cpu',)
        auto_priority = 100

        def depthwise_conv(self, x, weight, bias=None, accumulate=None):
            calls.append(tuple(weight.shape))
            return super().depthwise_conv(x, weight, bias, accumulate)

    assert 'counting' in backend_names()
    with pytest.raises(KeyError, match='already registered'):
        register_backend(CountingBackend)
    model = SLaK(arch=TINY_ARCH).eval()  # 'auto' picks the top priority
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    # Two folded strips per block.
    assert len(calls) == 2 * sum(TINY_ARCH['depths'])
    with pytest.raises(ValueError, match="'counting' runs on"):
        get_backend('counting', 'cuda')

"""The ``'triton'`` backend: the whole SLaK against ``'reference'``.

Without a GPU it runs under Triton's interpreter on CPU tensors (named
explicitly, ``TRITON_INTERPRET=1``); the narrow backbone of
``TINY_ARCH`` on 32 x 32 images keeps the interpreted kernels to a few
seconds per pass. Tests marked ``cuda`` run it on a GPU against
``'reference'`` and skip without one.
"""

import sys

import pytest
import torch

from slak_mm.models import LargeKernelConv, SLaK
from slak_mm.models.backends import base, get_backend, use_backend
from slak_mm.ops import triton_dwconv

from .helpers import (
    REQUIRES_TRITON_CUDA,
    TINY_ARCH,
    randomize_batch_norms,
    record_kernel_launches,
    relative_close,
)

# One tile per map and channel block: fewer interpreted programs (tile
# borders are covered by tests/test_triton_dwconv.py).
INTERPRETER_TEST_BLOCKS = dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=64)


def tiny_slak(device='cpu'):
    model = SLaK(
        arch=TINY_ARCH, out_indices=(0, 1, 2, 3), layer_scale_init_value=1.0
    )
    randomize_batch_norms(model)
    return model.to(device)


def linear_loss(outs):
    return sum(
        (
            out.float()
            * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(
                out
            )
        ).sum()
        for out in outs
    )


def train_step(model, images, backend):
    """Outputs, input gradient and parameter gradients through ``backend``."""
    model.train().zero_grad(set_to_none=True)
    images = images.clone().requires_grad_(True)
    with use_backend(model, backend):
        outs = model(images)
    linear_loss(outs).backward()
    grads = {'input': images.grad}
    grads.update(
        {
            name: param.grad.clone()
            for name, param in model.named_parameters()
            if param.grad is not None
        }
    )
    return [out.detach() for out in outs], grads


def compare_train_step(model, images, tol):
    outs, grads = train_step(model, images, 'reference')
    triton_outs, triton_grads = train_step(model, images, 'triton')
    for out, triton_out in zip(outs, triton_outs):
        relative_close(triton_out, out, tol)
    assert triton_grads.keys() == grads.keys()
    for name, grad in grads.items():
        relative_close(triton_grads[name], grad, tol)


def compare_eval_and_deploy(model, images, tol):
    model.eval()
    with torch.no_grad():
        with use_backend(model, 'reference'):
            expected = model(images)
        with use_backend(model, 'triton'):
            folded = model(images)
        model.switch_to_deploy()
        with use_backend(model, 'triton'):
            deployed = model(images)
    for out, folded_out, deployed_out in zip(expected, folded, deployed):
        relative_close(folded_out, out, tol)
        relative_close(deployed_out, out, tol)


def test_train_step_matches_reference(interpreter):
    """Train-mode BNs: every branch conv on the Triton kernels, input and
    weight gradients through their backward (maps 8, 4, 2, 1: SLaK-T's
    kernels cropped)."""
    model = tiny_slak()
    # Two images: train-mode BN needs two values on the 1 x 1 last map.
    compare_train_step(model, torch.randn(2, 3, 32, 32), 1e-4)


@pytest.fixture
def backward_ran(monkeypatch):
    """The ``'triton'`` backend after one Triton backward on CPU in fp32
    and bf16: training-mode modules take the shared-padding branch convs
    (before it, each conv runs alone under the first backward's guard)."""
    backend = get_backend('triton', 'cpu')
    monkeypatch.setattr(backend, 'failed_cases', {})
    monkeypatch.setattr(
        backend,
        '_backward_ran',
        {
            (torch.device('cpu'), dtype)
            for dtype in (torch.float32, torch.bfloat16)
        },
    )


def counting_map_pads(monkeypatch):
    """Counts the padded map copies (4-D ``F.pad`` calls) that
    :mod:`slak_mm.ops.triton_dwconv` makes."""
    calls = []
    pad = torch.nn.functional.pad

    def counting_pad(x, *args, **kwargs):
        caller = sys._getframe(1).f_code.co_filename
        if x.dim() == 4 and caller == triton_dwconv.__file__:
            calls.append(tuple(x.shape))
        return pad(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, 'pad', counting_pad)
    return calls


@pytest.mark.parametrize(
    'channels, copies',
    [(10, 5), (64, 4)],
    ids=['padded channels', 'aligned channels'],
)
@pytest.mark.parametrize(
    'dtype, tol',
    [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)],
    ids=['fp32', 'bf16 autocast'],
)
def test_module_step_pads_each_map_once(
    interpreter, backward_ran, monkeypatch, channels, copies, dtype, tol
):
    """One training step of a large-kernel module (three branch convs with
    batch statistics): the input is padded once for the three forwards
    and, when its channels are not a multiple of 64, once along channels
    for the three weight gradients; each output gradient once for its
    input and weight gradients. (One copy per kernel call made 12.) The
    outputs and gradients are the fp32 reference's, with kernels longer
    than the map."""
    torch.manual_seed(0)
    module = LargeKernelConv(channels, 13, small_kernel=5)
    for branch in module._branches():
        branch.bn.weight.data.uniform_(0.5, 1.5)
        branch.bn.bias.data.uniform_(-0.5, 0.5)
    module.train()
    x = torch.randn(2, channels, 9, 6)
    calls = counting_map_pads(monkeypatch)
    results = {}
    for backend in ('reference', 'triton'):
        module.zero_grad(set_to_none=True)
        images = x.clone().requires_grad_(True)
        calls.clear()
        autocast = torch.autocast(
            'cpu', dtype=dtype, enabled=backend == 'triton'
        )
        with autocast:
            out = module(images, backend)
        linear_loss([out]).backward()
        grads = [images.grad] + [p.grad for p in module.parameters()]
        results[backend] = (out.detach(), grads, len(calls))
    out, grads, _ = results['reference']
    triton_out, triton_grads, pads = results['triton']
    assert pads == copies
    relative_close(triton_out, out, tol)
    for triton_grad, grad in zip(triton_grads, grads):
        relative_close(triton_grad, grad, tol)


def test_eval_pair_and_deploy_match_reference(interpreter, monkeypatch):
    """Eval: the folded strips and their bias in one pair call per block;
    deploy: the fused convs, the same way. On the 8 x 8 map of stage 0
    SLaK-T's strips are cropped to 15 x 5 and 5 x 15: two sliding
    windows, the second adding the first's fp32 sum; the shorter cropped
    kernels of the later stages one tap-loop pass each."""
    pair_calls = []
    pair = triton_dwconv.depthwise_conv_pair_same_triton

    def counting_pair(*args, **kwargs):
        pair_calls.append(args[1].shape)
        return pair(*args, **kwargs)

    monkeypatch.setattr(
        triton_dwconv, 'depthwise_conv_pair_same_triton', counting_pair
    )
    launches = record_kernel_launches(monkeypatch)
    compare_eval_and_deploy(tiny_slak(), torch.randn(1, 3, 32, 32), 1e-5)
    # Once per block in eval, once per block in deploy form.
    assert len(pair_calls) == 2 * sum(TINY_ARCH['depths'])
    windows = [
        (
            'strip_forward',
            dict(ALONG_W=False, HAS_BIAS=True, ACCUMULATE=False),
        ),
        ('strip_forward', dict(ALONG_W=True, HAS_BIAS=False, ACCUMULATE=True)),
    ]
    tap_loop = ('forward', dict(HAS_SECOND=True, HAS_BIAS=True))
    per_form = windows * TINY_ARCH['depths'][0] + [tap_loop] * sum(
        TINY_ARCH['depths'][1:]
    )
    assert launches == 2 * per_form


def test_module_under_bf16_autocast(interpreter):
    """A large-kernel module's train step under CPU bf16 autocast: the
    Triton kernels read the bf16 input cast as for ``F.conv2d`` and
    accumulate in fp32; close to the reference under the same autocast."""
    from slak_mm.models import LargeKernelConv

    module = LargeKernelConv(16, 13, 3)
    randomize_batch_norms(module)
    x = torch.randn(2, 16, 9, 11)
    results = []
    for backend in ('reference', 'triton'):
        module.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_(True)
        with torch.autocast('cpu', torch.bfloat16):
            out = module(inputs, backend)
        assert out.dtype == torch.bfloat16
        linear_loss([out]).backward()
        grads = [inputs.grad] + [p.grad for p in module.parameters()]
        results.append((out.detach(), grads))
    (out, grads), (triton_out, triton_grads) = results
    relative_close(triton_out, out, 2e-2)
    for grad, triton_grad in zip(grads, triton_grads):
        relative_close(triton_grad, grad, 2e-2)


def test_backend_resolution_on_cpu(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert get_backend('auto', 'cpu').name == 'fast'
    if triton_dwconv.triton is not None:
        assert get_backend('triton', 'cpu').name == 'triton'
    monkeypatch.delenv('TRITON_INTERPRET')
    assert get_backend('auto', 'cpu').name == 'fast'
    with pytest.raises(ValueError, match="'triton' runs on .*cuda.*cpu"):
        get_backend('triton', 'cpu')


@pytest.fixture
def fresh_resolution():
    base._resolve.cache_clear()
    yield
    base._resolve.cache_clear()


def test_auto_on_cuda_prefers_triton_then_cudnn(fresh_resolution, monkeypatch):
    """Without a GPU: with CUDA reported present, 'auto' on CUDA is
    'triton' when Triton imports and 'native' (cuDNN) when it does not."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(triton_dwconv, 'triton', object())
    assert get_backend('auto', 'cuda').name == 'triton'
    assert get_backend('triton', 'cuda').channels_last(torch.device('cuda'))
    base._resolve.cache_clear()
    monkeypatch.setattr(triton_dwconv, 'triton', None)
    assert get_backend('auto', 'cuda').name == 'native'
    with pytest.raises(RuntimeError, match="'triton' is not available"):
        get_backend('triton', 'cuda')


# ---------------------------------------------------------------- CUDA only


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
def test_cuda_auto_is_triton():
    assert get_backend('auto', 'cuda').name == 'triton'


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
def test_cuda_train_step_matches_reference(exact_fp32):
    model = tiny_slak('cuda')
    images = torch.randn(2, 3, 96, 96, device='cuda')
    compare_train_step(model, images, 1e-4)


@pytest.mark.cuda
@REQUIRES_TRITON_CUDA
def test_cuda_eval_pair_and_deploy_match_reference(exact_fp32):
    images = torch.randn(2, 3, 96, 96, device='cuda')
    compare_eval_and_deploy(tiny_slak('cuda'), images, 1e-5)

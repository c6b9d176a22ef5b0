"""Every backend under CPU autocast (bf16 and fp16) against fp32.

Errors are relative to the largest magnitude of the fp32 result (max abs
difference over max abs), per output and per parameter gradient. bf16
keeps 8 significant bits (rounding 2^-9 = 2e-3 per op), fp16 11 bits.
Measured on the tiny SLaK below (every backend alike): outputs 6e-3 (bf16)
and 9e-4 (fp16); gradients 2.6e-2 and 4.3e-3, the worst on the last
stage's kernels, whose batch norm normalises 2 samples of a 1x1 map. The
bounds leave about 2x room over those.
"""

import pytest
import torch

from slak_mm.models import SLaK
from slak_mm.models.backends import (
    cache_weight_casts,
    fast_cpu,
    get_backend,
    torch_private,
)

from .helpers import TINY_ARCH, cpu_backends, randomize_batch_norms

# Which kernels run under autocast depends on what oneDNN supports on the
# CPU (bf16: AVX512-BF16/AMX, fp16: AVX512-FP16/AVX-NE-CONVERT).
pytestmark = pytest.mark.cpu_capability

# dtype -> (outputs, gradients)
TOLERANCE = {torch.bfloat16: (1.5e-2, 5e-2), torch.float16: (2e-3, 1e-2)}
DTYPES = list(TOLERANCE)
BACKENDS = cpu_backends(include_reference=True)


def relative_error(actual, expected):
    scale = expected.double().abs().max().clamp_min(1e-12)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def make_model(backend):
    torch.manual_seed(0)
    model = SLaK(
        arch=TINY_ARCH,
        out_indices=(0, 1, 2, 3),
        layer_scale_init_value=1.0,
        backend=backend,
    )
    randomize_batch_norms(model)
    return model


def train_pass(model, x, dtype=None):
    """Outputs (fp32 copies) and parameter gradients of one train pass."""
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast(
        'cpu', dtype=dtype or torch.float32, enabled=bool(dtype)
    ):
        outs = model(x)
        loss = sum(
            (o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
            for o in outs
        )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return [o.detach().float() for o in outs], grads


@pytest.mark.parametrize('dtype', DTYPES, ids=['bf16', 'fp16'])
@pytest.mark.parametrize('backend', BACKENDS)
def test_eval_under_autocast_matches_fp32(backend, dtype):
    model = make_model(backend).eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast('cpu', dtype=dtype):
            outs = model(x)
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert relative_error(out, ref) <= TOLERANCE[dtype][0]


@pytest.mark.parametrize('dtype', DTYPES, ids=['bf16', 'fp16'])
@pytest.mark.parametrize('backend', BACKENDS)
def test_train_under_autocast_matches_fp32(backend, dtype):
    model = make_model(backend)
    x = torch.randn(2, 3, 48, 40)
    expected_outs, expected_grads = train_pass(model, x)
    outs, grads = train_pass(model, x, dtype)
    for out, ref in zip(outs, expected_outs):
        assert relative_error(out, ref) <= TOLERANCE[dtype][0]
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name  # parameters stay fp32
        error = relative_error(grad, expected_grads[name])
        assert error <= TOLERANCE[dtype][1], f'{name}: {error:.3g}'


def graph_nodes(tensor):
    """Names of every autograd node that produced ``tensor``."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize('dtype', DTYPES, ids=['bf16', 'fp16'])
def test_fast_backend_keeps_its_kernels_under_autocast(dtype, monkeypatch):
    """Where oneDNN runs the dtype natively the fast path's structure stays
    (custom backwards in training, the fused strip sum in eval, all in the
    autocast dtype); elsewhere standard ops run, as autocast would."""
    if get_backend('auto', 'cpu').name != 'fast':
        pytest.skip("the 'fast' backend is not available here")
    native_kernels = torch_private.onednn_supports(dtype)
    model = make_model('fast')
    x = torch.randn(2, 3, 48, 40)
    with torch.autocast('cpu', dtype=dtype):
        out = model.train()(x)[0]
    nodes = graph_nodes(out)
    for custom in ('slak_mm_depthwise_conv_same', 'slak_mm_mlp'):
        found = any(custom in node for node in nodes)
        assert found == native_kernels, custom
    fused_dtypes = []
    conv_add = torch_private.conv_add

    def recording_conv_add(x, *args):
        fused_dtypes.append(x.dtype)
        return conv_add(x, *args)

    monkeypatch.setattr(torch_private, 'conv_add', recording_conv_add)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        model.eval()(x)
    blocks = sum(TINY_ARCH['depths'])
    expected = [dtype] * blocks if native_kernels else []
    assert fused_dtypes == expected


def fast_backend_or_skip():
    backend = get_backend('auto', 'cpu')
    if backend.name != 'fast':
        pytest.skip("the 'fast' backend is not available here")
    if not torch_private.onednn_supports(torch.bfloat16):
        pytest.skip(
            'oneDNN has no bf16 kernels on this CPU (no AVX512-BF16 or '
            "AMX): 'fast' runs standard ops under bf16 autocast"
        )
    return backend


def test_fast_layer_norm_keeps_bf16_and_matches_fp32():
    """The block norm reads and writes bf16 (no round trip through fp32)
    with fp32 statistics; outputs and gradients (input and affine
    parameters) as the fp32 norm of the same bf16 map."""
    backend = fast_backend_or_skip()
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(24, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(2, 5, 6, 24) * 3 + 1).bfloat16().requires_grad_()
    weight = torch.randn(2, 5, 6, 24)

    def run(fn, inputs):
        norm.zero_grad(set_to_none=True)
        out = fn(inputs)
        (out.float() * weight).sum().backward()
        return out, norm.weight.grad.clone(), norm.bias.grad.clone()

    x32 = x.detach().float().requires_grad_()
    expected = run(norm, x32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        actual = run(lambda t: backend.layer_norm(t, norm), x)
    assert actual[0].dtype == torch.bfloat16
    assert x.grad.dtype == torch.bfloat16
    assert relative_error(actual[0], expected[0]) <= 1e-2
    assert relative_error(x.grad, x32.grad) <= 2e-2
    for got, ref in zip(actual[1:], expected[1:]):
        assert got.dtype == torch.float32
        assert relative_error(got, ref) <= 2e-2


def test_weight_cast_cache_sees_in_place_writes():
    """Inside cache_weight_casts the bf16 copies are reused, and an
    in-place masked write on a parameter (as the sparse masks do) or a
    loaded state dict is seen by the next forward."""
    fast_backend_or_skip()
    model = make_model('fast').eval()
    x = torch.randn(2, 3, 48, 40)

    def forward():
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            return model(x)

    def cached_copy(param):
        return fast_cpu._weight_casts[param][1]

    def equal(outs_a, outs_b):
        return all(torch.equal(a, b) for a, b in zip(outs_a, outs_b))

    uncached = forward()
    fc1 = model.stages[1][0].pointwise_conv1
    with cache_weight_casts():
        first = forward()
        copy = cached_copy(fc1.weight)
        assert copy.dtype == torch.bfloat16
        second = forward()
        assert cached_copy(fc1.weight) is copy  # reused, not cast again
        with torch.no_grad():
            fc1.weight.mul_(torch.rand_like(fc1.weight) > 0.5)
        masked = forward()
        assert torch.equal(cached_copy(fc1.weight), fc1.weight.bfloat16())
    assert fast_cpu._weight_casts is None  # freed on exit
    assert equal(uncached, first) and equal(first, second)
    assert not equal(masked, first)
    assert equal(masked, forward())  # as uncached, same weights
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['stages.1.0.pointwise_conv1.weight'].fill_(0.5)
    with cache_weight_casts():
        forward()
        model.load_state_dict(state)
        loaded = forward()
    assert not equal(loaded, masked)
    assert equal(loaded, forward())

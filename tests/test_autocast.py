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
from slak_mm.models.backends import get_backend, ops

from .conftest import TINY_ARCH, cpu_backends, randomize_batch_norms

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
    native_kernels = ops.onednn_supports(dtype)
    model = make_model('fast')
    x = torch.randn(2, 3, 48, 40)
    with torch.autocast('cpu', dtype=dtype):
        out = model.train()(x)[0]
    nodes = graph_nodes(out)
    for custom in ('DepthwiseConvSameBackward', 'OneDNNMLPBackward'):
        assert (custom in nodes) == native_kernels, custom
    fused_dtypes = []
    conv_add = ops.conv_add

    def recording_conv_add(x, *args):
        fused_dtypes.append(x.dtype)
        return conv_add(x, *args)

    monkeypatch.setattr(ops, 'conv_add', recording_conv_add)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        model.eval()(x)
    blocks = sum(TINY_ARCH['depths'])
    expected = [dtype] * blocks if native_kernels else []
    assert fused_dtypes == expected

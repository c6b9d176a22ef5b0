"""The block MLP module and the oneDNN MLP of the ``'fast'`` backend equal
``nn.Linear -> GELU -> nn.Linear``."""

import copy

import pytest
import torch
import torch.nn as nn

from slak_mm.models import SLaK, SLaKBlock
from slak_mm.models.backends import get_backend, torch_private
from slak_mm.models.mlp import BlockMLP

from .helpers import (
    TINY_ARCH,
    cpu_backends,
    randomize_batch_norms,
    relative_close,
    run_module,
)

# Block widths of SLaK-T/S (124, 249, 499, 998) and SLaK-B (166 ... 1331).
WIDTHS = [124, 249, 499, 998, 166, 1331]


def make_mlp(channels, approximate='none'):
    fc1 = nn.Linear(channels, 4 * channels)
    fc2 = nn.Linear(4 * channels, channels)
    return fc1, nn.GELU(approximate=approximate), fc2


def block_mlp(x, fc1, act, fc2, mlp_impl):
    """The MLP through the ``'fast'`` backend (``'onednn'``) or the
    modules (``'torch'``)."""
    backend = get_backend('fast' if mlp_impl == 'onednn' else 'native', 'cpu')
    return BlockMLP()(x, fc1, act, fc2, backend)


def mlp_node(out):
    """The autograd node under the final reshape of the oneDNN MLP."""
    assert type(out.grad_fn).__name__ == 'ViewBackward0'
    return out.grad_fn.next_functions[0][0]


def mlp_grads(x, mlp, impl, grad_out):
    x = x.clone().requires_grad_(True)
    out = block_mlp(x, *mlp, mlp_impl=impl)
    out.backward(grad_out)
    params = [p for m in mlp for p in m.parameters()]
    grads = [x.grad] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out, grads


# The oneDNN GEMMs against ATen's, each picking kernels per instruction set.
@pytest.mark.cpu_capability
@pytest.mark.parametrize('channels', WIDTHS)
@pytest.mark.parametrize('approximate', ['none', 'tanh'])
def test_onednn_mlp_matches_torch(channels, approximate):
    mlp = make_mlp(channels, approximate)
    x = torch.randn(2, 5, 7, channels)
    grad_out = torch.randn(2, 5, 7, channels)
    expected, expected_grads = mlp_grads(x, mlp, 'torch', grad_out)
    out, grads = mlp_grads(x, mlp, 'onednn', grad_out)
    assert 'slak_mm_mlp' in type(mlp_node(out)).__name__
    relative_close(out, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.shape == expected_grad.shape
        relative_close(grad, expected_grad)
    with torch.no_grad():
        fused = block_mlp(x, *mlp, mlp_impl='onednn')
    assert fused.grad_fn is None
    relative_close(fused, expected)


def test_onednn_mlp_keeps_no_hidden_activation():
    """Only the input and the pre-GELU activation stay for the backward."""
    mlp = make_mlp(16)
    x = torch.randn(3, 4, 16, requires_grad=True)
    out = block_mlp(x, *mlp, mlp_impl='onednn')
    saved = mlp_node(out).saved_tensors
    shapes = sorted(tuple(t.shape) for t in saved)
    assert shapes == sorted([(12, 16), (12, 64), (64, 16), (16, 64)])


def test_onednn_mlp_input_only_or_weights_only_gradients():
    mlp = make_mlp(8)
    x = torch.randn(6, 8)
    for p in mlp[0].parameters():
        p.requires_grad_(False)
    out = block_mlp(x, *mlp, mlp_impl='onednn')
    out.sum().backward()
    assert mlp[0].weight.grad is None
    assert mlp[2].weight.grad is not None
    expected = block_mlp(x, *mlp, mlp_impl='torch')
    relative_close(out, expected)
    for p in (*mlp[0].parameters(), *mlp[2].parameters()):
        p.requires_grad_(False)
    x.requires_grad_(True)
    block_mlp(x, *mlp, mlp_impl='onednn').sum().backward()
    x_grad = x.grad.clone()
    x.grad = None
    block_mlp(x, *mlp, mlp_impl='torch').sum().backward()
    relative_close(x_grad, x.grad)


def test_fast_mlp_needs_gelu_and_runs_standard_ops_otherwise():
    mlp = make_mlp(8)
    with pytest.raises(TypeError, match='ReLU'):
        block_mlp(torch.randn(2, 8), mlp[0], nn.ReLU(), mlp[2], 'onednn')
    # fp64 has no oneDNN kernel: the modules run (no custom autograd node).
    x = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    out = block_mlp(x, *[m.double() for m in mlp], 'onednn')
    assert type(out.grad_fn).__name__ == 'AddmmBackward0'


def test_onednn_ops_are_found_and_fast_is_auto_on_cpu():
    assert torch_private.available('linear')
    assert torch_private.available('conv_add')
    assert get_backend('auto', 'cpu').name == 'fast'


def test_hooks_on_the_mlp_module_fire_on_every_backend():
    block = SLaKBlock(8, 13, 5)
    assert isinstance(block.mlp, BlockMLP)
    assert 'mlp' in dict(block.named_modules())
    # The MLP module holds no parameters of its own: the released names stay.
    assert not list(block.mlp.parameters())
    assert {k for k in block.state_dict() if 'pointwise' in k} == {
        'pointwise_conv1.weight',
        'pointwise_conv1.bias',
        'pointwise_conv2.weight',
        'pointwise_conv2.bias',
    }
    for name in ('auto', 'fast', 'native', 'reference'):
        seen = []
        handle = block.mlp.register_forward_hook(
            lambda module, inputs, output, seen=seen: seen.append(output.shape)
        )
        block(torch.randn(1, 8, 6, 6), name)
        handle.remove()
        assert seen == [torch.Size([1, 6, 6, 8])], name


def block_by_hand(block, x, backend):
    """The block computed from its current layers: large kernel through
    ``backend``, then norm, ``pointwise_conv2(act(pointwise_conv1(.)))``,
    layer scale and residual as modules."""
    y = block.large_kernel(x, backend).permute(0, 2, 3, 1)
    y = block.pointwise_conv2(block.act(block.pointwise_conv1(block.norm(y))))
    return x + (y * block.gamma).permute(0, 3, 1, 2)


@pytest.mark.parametrize('backend', cpu_backends(include_reference=True))
def test_block_runs_layers_swapped_in_by_assignment(backend):
    """A layer replaced on the block (quantisation, LoRA,
    ``convert_sync_batchnorm``) is the one the MLP runs, forward and
    backward."""
    torch.manual_seed(0)
    block = SLaKBlock(8, 13, 5, layer_scale_init_value=0.5).eval()
    x = torch.randn(2, 8, 6, 7)
    with torch.no_grad():
        before = block(x, backend)
    swapped = nn.Linear(8, 32)
    block.pointwise_conv1 = swapped
    out = block(x, backend)
    with torch.no_grad():
        relative_close(out, block_by_hand(block, x, 'reference'))
        assert (out - before).abs().max() > 1e-3
    out.square().sum().backward()
    assert swapped.weight.grad is not None
    assert swapped.weight.grad.abs().sum() > 0


def test_mlp_module_follows_copies_and_moves():
    """A deepcopy runs its own layers, also after a dtype move."""
    block = SLaKBlock(8, 13, 5, layer_scale_init_value=0.5).eval()
    copied = copy.deepcopy(block).double()
    with torch.no_grad():
        copied.pointwise_conv2.bias.add_(1.0)
        x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
        out = copied(x, 'reference')
        assert out.dtype == torch.float64
        relative_close(out, block_by_hand(copied, x, 'reference'))
        # The original's layers are untouched.
        assert block.pointwise_conv2.weight.dtype == torch.float32
        assert not torch.equal(
            block.pointwise_conv2.bias, copied.pointwise_conv2.bias.float()
        )


@pytest.mark.parametrize('layer_scale', [0.0, 0.5])
@pytest.mark.parametrize('train', [True, False])
def test_block_matches_reference(layer_scale, train):
    """Fused scale + residual and the oneDNN MLP inside a whole block."""
    reference = SLaKBlock(24, 13, 5, layer_scale_init_value=layer_scale)
    randomize_batch_norms(reference)
    reference.train(train)
    fast = copy.deepcopy(reference)
    x = torch.randn(2, 24, 9, 11)
    grad_out = torch.randn(2, 24, 9, 11)
    expected, expected_grads = run_module(reference, x, grad_out, 'reference')
    out, grads = run_module(
        fast, x.contiguous(memory_format=torch.channels_last), grad_out
    )
    relative_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        relative_close(grads[name], expected_grads[name])


def conv_input_layouts(model, x):
    """Memory layouts of the inputs of the depthwise convs of ``model``."""
    layouts = []

    def record(module, inputs):
        if module.groups > 1:
            layouts.append(
                'nchw'
                if inputs[0].is_contiguous()
                else 'channels_last'
                if inputs[0].is_contiguous(memory_format=torch.channels_last)
                else 'other'
            )

    handles = [
        m.register_forward_pre_hook(record)
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    model(x)
    for handle in handles:
        handle.remove()
    return layouts


def test_reference_path_runs_nchw_as_released():
    """The release's channels-first LayerNorm and ``input + x`` residual
    keep every map NCHW; a channels-last leak would make it a fast path."""
    model = SLaK(arch=TINY_ARCH, backend='reference').eval()
    with torch.no_grad():
        layouts = conv_input_layouts(model, torch.randn(1, 3, 64, 64))
    assert len(layouts) == 3 * 5
    assert set(layouts) == {'nchw'}


def test_fast_path_keeps_channels_last_and_layer_norm_keeps_layout():
    model = SLaK(arch=TINY_ARCH).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))[0]
    assert out.is_contiguous()
    norm = model.downsample_layers[1][0]
    x = torch.randn(2, norm.normalized_shape[0], 5, 7)
    assert norm(x).is_contiguous()
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert norm(channels_last).is_contiguous(memory_format=torch.channels_last)
    relative_close(norm(channels_last), norm(x))


@pytest.mark.parametrize('tracer', ['jit', 'export'])
def test_traced_model_uses_standard_ops_only(tracer):
    """Exporters trace the model: no oneDNN-only op may enter the graph."""
    model = SLaK(arch=TINY_ARCH, out_indices=(0, 3)).eval()
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        if tracer == 'jit':
            traced = torch.jit.trace(model, x)
            graph = str(traced.inlined_graph)
        else:
            traced = torch.export.export(model, (x,)).module()
            graph = str(traced.graph)
    assert 'linear' in graph and 'conv' in graph
    assert 'mkldnn' not in graph
    with torch.no_grad():
        for out, ref in zip(traced(x), expected):
            relative_close(out, ref)


def test_onednn_mlp_follows_in_place_weight_changes():
    """Masks and EMA swaps write through ``.data``; nothing may be cached."""
    mlp = make_mlp(16)
    x = torch.randn(10, 16)
    with torch.no_grad():
        before = block_mlp(x, *mlp, mlp_impl='onednn')
        mlp[0].weight.data.mul_(torch.rand_like(mlp[0].weight) > 0.5)
        mlp[2].bias.data.add_(1.0)
        after = block_mlp(x, *mlp, mlp_impl='onednn')
        relative_close(after, block_mlp(x, *mlp, mlp_impl='torch'))
    assert (after - before).abs().max() > 0.5

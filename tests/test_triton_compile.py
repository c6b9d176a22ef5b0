"""The ``'triton'`` backend under ``torch.compile``: the kernels kept.

The Triton kernels are custom ops (``slak_mm::triton_depthwise_conv_same``,
``triton_depthwise_conv_pair_same``, ``triton_depthwise_conv_weight_grad``,
``triton_depthwise_conv_branches`` and its ``_backward``)
so that ``torch.compile`` keeps them in one graph instead of running the
standard convs. Without a GPU they run under Triton's interpreter on CPU
tensors: each op passes ``torch.library.opcheck``, the backbone compiles
with ``fullgraph=True`` to one graph holding the ops (the pair op in eval,
the branch convs' op in training), and ``aot_eager`` outputs and gradients
match eager, with the backward graph on the Triton gradient ops.
"""

import collections
import functools

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch._dynamo.backends.debugging import aot_eager, boxed_nop

from slak_mm.models import SLaK
from slak_mm.models.backends import get_backend
from slak_mm.ops import triton_dwconv

from .helpers import KERNELS, SMALL, randomize_batch_norms, relative_close

# One tile per map and channel block: fewer interpreted programs.
INTERPRETER_TEST_BLOCKS = dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=64)
# Two blocks per stage: blocks of one stage must share compiled code.
ARCH = dict(depths=[2, 2, 2, 2], channels=[8, 16, 24, 32])
CUSTOM_OPS = {
    'triton_depthwise_conv_same',
    'triton_depthwise_conv_pair_same',
    'triton_depthwise_conv_weight_grad',
    'triton_depthwise_conv_branches',
    'triton_depthwise_conv_branches_backward',
}


def make_backbone(training):
    torch.manual_seed(0)
    model = SLaK(
        arch=ARCH,
        kernel_sizes=KERNELS,
        small_kernel=SMALL,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        layer_scale_init_value=1.0,
        backend='triton',
    )
    model.init_weights()
    randomize_batch_norms(model)
    return model.train(training)


def graph_ops(backbone, x):
    """The graphs dynamo makes of ``backbone(x)``, the calls of each
    ``slak_mm`` op in them and the ``groups`` of their standard convs
    (``fullgraph=True``: a break raises)."""
    graphs, op_calls, conv_groups = [], collections.Counter(), []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        for node in graph_module.graph.nodes:
            target = str(node.target)
            if target.startswith('slak_mm.'):
                op_calls[target.split('.')[1]] += 1
            elif node.target in (torch.conv2d, F.conv2d):
                conv_groups.append(node.args[6] if len(node.args) > 6 else 1)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(backbone, backend=capture, fullgraph=True)
    compiled(x)
    return graphs, op_calls, conv_groups


@pytest.fixture
def fresh_backend(monkeypatch):
    """The ``'triton'`` backend as in a new process: no case fell back and
    no backward ran, so eager training would guard its first backward (an
    autograd.Function dynamo cannot trace, left out while compiling)."""
    backend = get_backend('triton', 'cpu')
    monkeypatch.setattr(backend, 'failed_cases', {})
    monkeypatch.setattr(backend, '_backward_ran', set())


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_backbone_is_one_graph_with_the_triton_ops(
    interpreter, fresh_backend, training
):
    backbone = make_backbone(training)
    x = torch.randn(2, 3, 32, 32)
    with torch.set_grad_enabled(training):
        graphs, op_calls, conv_groups = graph_ops(backbone, x)
    assert len(graphs) == 1
    blocks = sum(ARCH['depths'])
    # Eval: the folded strips of each block in one pass; train: the three
    # branch convs (vertical, horizontal, small) of each block in one op.
    expected = (
        {'triton_depthwise_conv_branches': blocks}
        if training
        else {'triton_depthwise_conv_pair_same': blocks}
    )
    assert dict(op_calls) == expected
    # Only the stem and downsampling convs stay standard (not depthwise).
    assert conv_groups == [1] * len(ARCH['depths'])


def spying_aot_eager(ops_seen):
    """``aot_eager`` recording the ``slak_mm`` ops of its forward and
    backward graphs in ``ops_seen['forward']`` and ``['backward']``."""

    def spy(kind):
        def compiler(graph_module, example_inputs):
            for node in graph_module.graph.nodes:
                target = str(node.target)
                if target.startswith('slak_mm.'):
                    ops_seen[kind].add(target.split('.')[1])
            return boxed_nop(graph_module, example_inputs)

        return compiler

    return functools.partial(
        aot_eager, fw_compiler=spy('forward'), bw_compiler=spy('backward')
    )


def outputs_and_grads(backbone, x, weights, compile_backend=None):
    backbone.zero_grad()
    run = backbone
    if compile_backend is not None:
        torch._dynamo.reset()
        run = torch.compile(backbone, backend=compile_backend, fullgraph=True)
    x = x.clone().requires_grad_(backbone.training)
    outs = run(x)
    # A random projection: the plain sum of a LayerNorm output has a zero
    # gradient, which would compare rounding noise.
    loss = sum((out.float() * w).sum() for out, w in zip(outs, weights))
    if not backbone.training:
        return outs, {}
    loss.backward()
    grads = {n: p.grad.clone() for n, p in backbone.named_parameters()}
    grads['input'] = x.grad
    return outs, grads


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_aot_eager_matches_eager(interpreter, training):
    backbone = make_backbone(training)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        shapes = [o.shape for o in backbone(x)]
    torch.manual_seed(1)
    weights = [torch.randn(shape) for shape in shapes]
    ops_seen = dict(forward=set(), backward=set())
    with torch.set_grad_enabled(training):
        expected, expected_grads = outputs_and_grads(backbone, x, weights)
        outs, grads = outputs_and_grads(
            backbone, x, weights, spying_aot_eager(ops_seen)
        )
    for out, ref in zip(outs, expected):
        relative_close(out, ref, 1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        relative_close(grad, expected_grads[name], 1e-5)
    if training:
        # The backward runs the branch convs' gradient op.
        assert ops_seen['forward'] == {'triton_depthwise_conv_branches'}
        assert ops_seen['backward'] == {
            'triton_depthwise_conv_branches_backward'
        }
    else:
        assert ops_seen['forward'] == {'triton_depthwise_conv_pair_same'}


def test_autocast_casts_the_input_as_in_eager(interpreter):
    """Under CPU bf16 autocast the compiled conv and pair pass cast the
    input outside the ops as eager does: the same bf16 results."""
    x = channels_last(2, 6, 5, 7).requires_grad_()
    weight = torch.randn(6, 1, 5, 3, requires_grad=True)
    horizontal = torch.randn(6, 1, 3, 5)
    bias = torch.randn(6, requires_grad=True)

    def step(x, weight, bias):
        out = triton_dwconv.depthwise_conv_same_triton(x, weight, bias)
        with torch.no_grad():
            pair = triton_dwconv.depthwise_conv_pair_same_triton(
                x, weight, horizontal, bias
            )
        return out, pair

    def run(fn):
        for t in (x, weight, bias):
            t.grad = None
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out, pair = fn(x, weight, bias)
        (out.float() * pair.float()).sum().backward()
        return out, pair, x.grad, weight.grad, bias.grad

    expected = run(step)
    torch._dynamo.reset()
    compiled = run(torch.compile(step, backend='aot_eager', fullgraph=True))
    assert compiled[0].dtype == compiled[1].dtype == torch.bfloat16
    for actual, ref in zip(compiled, expected):
        assert actual.dtype == ref.dtype
        relative_close(actual.float(), ref.float(), 1e-5)


def channels_last(*shape):
    return torch.randn(*shape).to(memory_format=torch.channels_last)


def opcheck_cases():
    x = channels_last(2, 6, 5, 7).requires_grad_()
    weight = torch.randn(6, 1, 5, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    vertical, horizontal = torch.randn(6, 1, 5, 3), torch.randn(6, 1, 3, 5)
    small = torch.randn(6, 1, 3, 3, requires_grad=True)
    horizontal_grad = horizontal.clone().requires_grad_()
    grad_out = channels_last(2, 6, 5, 7)
    return [
        ('triton_depthwise_conv_same', (x, weight, bias)),
        (
            'triton_depthwise_conv_same',
            (x.detach().contiguous(), weight, None),
        ),
        (
            'triton_depthwise_conv_pair_same',
            (x.detach(), vertical, horizontal, bias.detach()),
        ),
        (
            'triton_depthwise_conv_pair_same',
            (x.detach().contiguous(), vertical, horizontal, None),
        ),
        ('triton_depthwise_conv_weight_grad', (x.detach(), grad_out, 5, 3)),
        (
            'triton_depthwise_conv_branches',
            (x, [weight, horizontal_grad, small]),
        ),
        (
            'triton_depthwise_conv_branches',
            (x.detach().contiguous(), [vertical, horizontal]),
        ),
        (
            'triton_depthwise_conv_branches_backward',
            (
                x.detach(),
                [grad_out, grad_out],
                [vertical, small.detach()],
                True,
                True,
            ),
        ),
        (
            'triton_depthwise_conv_branches_backward',
            (x.detach(), [grad_out], [horizontal], False, True),
        ),
    ]


@pytest.mark.parametrize(
    'name, args',
    opcheck_cases(),
    ids=[f'{name}-{i}' for i, (name, _) in enumerate(opcheck_cases())],
)
def test_custom_op_passes_opcheck(interpreter, name, args):
    op = getattr(triton_dwconv, name)
    results = torch.library.opcheck(op, args)
    assert set(results.values()) == {'SUCCESS'}, results


def test_every_custom_op_is_checked():
    registered = {
        name
        for name in dir(triton_dwconv)
        if isinstance(
            getattr(triton_dwconv, name),
            torch._library.custom_ops.CustomOpDef,
        )
    }
    assert registered == CUSTOM_OPS
    assert {name for name, _ in opcheck_cases()} == CUSTOM_OPS

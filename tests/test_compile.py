"""SLaK under ``torch.compile``: one graph, the fast kernels kept.

The backbone compiles with ``fullgraph=True`` on every CPU backend, in eval
and in training, to a single graph (blocks are inlined: no recompiles per
block); on ``'fast'`` the graph holds the backend's custom ops
(``slak_mm::depthwise_conv_same``, ``conv_add``, ``linear``, ``mlp``)
rather than standard convs. Outputs and gradients match eager; each custom
op passes ``torch.library.opcheck``; mmengine's ``compile=True`` trains the
demo segmentation and the classification config with the sparse hook's
masks kept.
"""

import os.path as osp

import pytest
import torch
import torch._dynamo
from mmengine.config import Config

from slak_mm.datasets import generate_ade20k, generate_imagenet
from slak_mm.models import SLaK
from slak_mm.models.backends import fast_cpu, get_backend

from .helpers import KERNELS, REPO, SMALL, relative_close, shrink_seg_config
from .tiny_configs import classification_config

CPU_BACKENDS = ['fast', 'native', 'reference']
# Two blocks per stage: blocks of one stage must share compiled code.
ARCH = dict(depths=[2, 2, 2, 2], channels=[8, 16, 24, 32])
CUSTOM_OPS = {
    'depthwise_conv_same',
    'conv_add',
    'linear',
    'mlp',
}


def needs(backend):
    try:
        get_backend(backend, 'cpu')
    except (ValueError, RuntimeError) as err:
        pytest.skip(f'backend {backend!r} does not run here: {err}')


def make_backbone(backend, training):
    torch.manual_seed(0)
    model = SLaK(
        arch=ARCH,
        kernel_sizes=KERNELS,
        small_kernel=SMALL,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        layer_scale_init_value=1.0,
        backend=backend,
    )
    model.init_weights()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.train(training)


def graph_ops(backbone, x):
    """The graphs dynamo makes of ``backbone(x)`` and the custom ops in
    them (``fullgraph=True``: a break raises)."""
    graphs, ops_seen = [], set()

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        for node in graph_module.graph.nodes:
            target = str(node.target)
            if target.startswith('slak_mm.'):
                ops_seen.add(target.split('.')[1])
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(backbone, backend=capture, fullgraph=True)
    compiled(x)
    return graphs, ops_seen


@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_backbone_is_one_graph(backend, training):
    needs(backend)
    backbone = make_backbone(backend, training)
    x = torch.randn(2, 3, 64, 64)
    with torch.set_grad_enabled(training):
        explanation = torch._dynamo.explain(backbone)(x)
        graphs, ops_seen = graph_ops(backbone, x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    assert len(graphs) == 1
    if backend == 'fast':
        # Eval: strips summed in oneDNN's conv, fused GELU linear; train:
        # the convs and MLPs with their fast backwards.
        expected = {'conv_add', 'linear'} if not training else None
        expected = expected or {'depthwise_conv_same', 'mlp'}
        assert expected <= ops_seen, ops_seen
    else:
        assert not ops_seen


def test_no_recompile_for_a_second_call_or_another_batch():
    needs('fast')
    backbone = make_backbone('fast', training=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(backbone, backend='eager', fullgraph=True)
    compiled(torch.randn(2, 3, 64, 64))
    compiled(torch.randn(2, 3, 64, 64))
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


def outputs_and_grads(backbone, x, weights, compile_backend=None):
    backbone.zero_grad()
    run = backbone
    if compile_backend is not None:
        torch._dynamo.reset()
        run = torch.compile(backbone, backend=compile_backend, fullgraph=True)
    outs = run(x)
    # A random projection: the plain sum of a LayerNorm output has a zero
    # gradient, which would compare rounding noise.
    loss = sum((out.float() * w).sum() for out, w in zip(outs, weights))
    if not backbone.training:
        return outs, {}
    loss.backward()
    grads = {n: p.grad.clone() for n, p in backbone.named_parameters()}
    return outs, grads


@pytest.mark.parametrize(
    'backend, training, compile_backend',
    [
        ('fast', True, 'inductor'),
        ('fast', False, 'inductor'),
        ('native', True, 'aot_eager'),
        ('reference', True, 'aot_eager'),
    ],
)
def test_compiled_matches_eager(backend, training, compile_backend):
    needs(backend)
    backbone = make_backbone(backend, training)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        shapes = [o.shape for o in backbone(x)]
    torch.manual_seed(1)
    weights = [torch.randn(shape) for shape in shapes]
    with torch.set_grad_enabled(training):
        expected, expected_grads = outputs_and_grads(backbone, x, weights)
        outs, grads = outputs_and_grads(backbone, x, weights, compile_backend)
    for out, ref in zip(outs, expected):
        relative_close(out, ref, 1e-5)
    for name, grad in grads.items():
        relative_close(grad, expected_grads[name], 1e-5)


@pytest.mark.parametrize('backend', ['fast', 'native'])
def test_compiled_matches_eager_under_bf16_autocast(backend):
    needs(backend)
    backbone = make_backbone(backend, training=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        shapes = [o.shape for o in backbone(x)]
    weights = [torch.randn(shape) for shape in shapes]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected, expected_grads = outputs_and_grads(backbone, x, weights)
        outs, grads = outputs_and_grads(backbone, x, weights, 'aot_eager')
    for out, ref in zip(outs, expected):
        relative_close(out.float(), ref.float(), 1e-2)
    for name, grad in grads.items():
        relative_close(grad, expected_grads[name], 1e-2)


def channels_last(*shape):
    return torch.randn(*shape).to(memory_format=torch.channels_last)


def opcheck_cases():
    x = channels_last(2, 6, 9, 7).requires_grad_()
    weight = torch.randn(6, 1, 7, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    other = channels_last(2, 6, 9, 7).requires_grad_()
    rows = torch.randn(10, 8, requires_grad=True)
    weight1 = torch.randn(32, 8, requires_grad=True)
    bias1 = torch.randn(32, requires_grad=True)
    weight2 = torch.randn(8, 32, requires_grad=True)
    bias2 = torch.randn(8, requires_grad=True)
    return [
        ('depthwise_conv_same', (x, weight, bias)),
        ('depthwise_conv_same', (x.detach().contiguous(), weight, None)),
        ('conv_add', (x, weight, bias, other)),
        ('linear', (rows, weight1, bias1, None)),
        ('linear', (rows, weight1, bias1, 'tanh')),
        ('mlp', (rows, weight1, bias1, weight2, bias2, 'none')),
        ('mlp', (rows, weight1, None, weight2, None, 'tanh')),
    ]


@pytest.mark.parametrize(
    'name, args',
    opcheck_cases(),
    ids=[f'{name}-{i}' for i, (name, _) in enumerate(opcheck_cases())],
)
def test_custom_op_passes_opcheck(name, args):
    needs('fast')
    op = getattr(fast_cpu, name)
    results = torch.library.opcheck(op, args)
    assert set(results.values()) == {'SUCCESS'}, results


def test_every_custom_op_is_checked():
    registered = {
        name
        for name in dir(fast_cpu)
        if isinstance(
            getattr(fast_cpu, name), torch._library.custom_ops.CustomOpDef
        )
    }
    assert registered == CUSTOM_OPS
    assert {name for name, _ in opcheck_cases()} == CUSTOM_OPS


def train_compiled_and_check_masks(cfg, tmp_path):
    """Trains ``cfg`` with mmengine's ``compile=True``; asserts that the
    sparse hook updated its masks and that masked weights are zero."""
    from mmengine.runner import Runner

    cfg.compile = True
    cfg.work_dir = str(tmp_path / 'work')
    # mmengine compiles BaseModel.train_step, one code object for every
    # model: a compile earlier in this process would make dynamo treat
    # the new shapes as dynamic.
    torch._dynamo.reset()
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(
        h for h in runner.hooks if type(h).__name__ == 'SparseTrainingHook'
    )
    state = hook.controller.mask_state
    assert len(state) > 0
    for name, param in state.params.items():
        assert torch.all(param[~state.masks[name]] == 0), name
    assert hook.controller.num_updates >= 1


def test_mmengine_compile_trains_with_masks_kept(tmp_path):

    data = generate_ade20k(
        tmp_path / 'data', num_train=4, num_val=2, image_size=64, seed=3
    )
    cfg = Config.fromfile(
        osp.join(
            REPO, 'configs/segmentation/demo_upernet_slak_ade20k_synthetic.py'
        )
    )
    shrink_seg_config(cfg, data['data_root'], max_iters=3)
    cfg.custom_hooks[0].update_interval = 2
    train_compiled_and_check_masks(cfg, tmp_path)


def test_mmengine_compile_trains_classification_with_masks_kept(tmp_path):
    # mmpretrain's default constructor hands the optimizer ConfigDict param
    # groups; the sparse hook makes them plain dicts dynamo can trace.
    cfg, _ = classification_config(tmp_path)
    data = generate_imagenet(
        tmp_path / 'train', num_train=8, num_val=4, image_size=64, seed=8
    )
    cfg.train_dataloader.dataset = dict(
        data['train_dataset'],
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=64),
            dict(type='PackInputs'),
        ],
    )
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.optim_wrapper.accumulative_counts = 1
    cfg.train_cfg = dict(by_epoch=False, max_iters=3, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    hook_cfg = next(
        h for h in cfg.custom_hooks if h['type'] == 'SparseTrainingHook'
    )
    hook_cfg.update_interval = 2
    train_compiled_and_check_masks(cfg, tmp_path)

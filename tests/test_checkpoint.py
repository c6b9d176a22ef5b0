import ast
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from slak_mm.models import SLaK
from slak_mm.models.checkpoint import split_pretrained_entries
from slak_mm.utils import safe_torch_load

from .helpers import (
    KERNELS,
    REPO,
    SMALL,
    TINY_ARCH,
    TINY_WIDTHS,
    release_state_dict,
    save_release,
)


def build(**kwargs):
    kwargs.setdefault('arch', TINY_ARCH)
    kwargs.setdefault('kernel_sizes', KERNELS)
    kwargs.setdefault('small_kernel', SMALL)
    return SLaK(**kwargs)


def test_release_checkpoint_loads_through_init_cfg(tmp_path):
    release = release_state_dict(
        TINY_ARCH['depths'], TINY_WIDTHS, KERNELS, SMALL
    )
    path = str(tmp_path / 'slak_tiny_release.pth')
    save_release(path, release)
    model = build(
        out_indices=3,
        gap_before_final_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint=path),
    )
    model.init_weights()
    block = model.stages[2][1]
    lk = block.large_kernel
    pairs = {
        'stages.2.1.large_kernel.LoRA1.conv.weight': lk.vertical.conv.weight,
        'stages.2.1.large_kernel.LoRA2.bn.running_var': (
            lk.horizontal.bn.running_var
        ),
        'stages.2.1.large_kernel.small_conv.bn.bias': lk.small.bn.bias,
        'stages.2.1.pwconv1.weight': block.pointwise_conv1.weight,
        'stages.2.1.pwconv2.bias': block.pointwise_conv2.bias,
        'stages.2.1.gamma': block.gamma,
        'stages.2.1.norm.weight': block.norm.weight,
        'downsample_layers.0.0.weight': model.downsample_layers[0][0].weight,
        'downsample_layers.3.0.bias': model.downsample_layers[3][0].bias,
        'norm.weight': model.norm3.weight,
    }
    for release_key, tensor in pairs.items():
        torch.testing.assert_close(tensor.detach(), release[release_key])
    # Every backbone tensor came from the file.
    own = model.state_dict()
    assert sum(t.numel() for t in own.values()) == sum(
        t.numel() for k, t in release.items() if not k.startswith('head.')
    )


def test_release_checkpoint_into_downstream_backbone(tmp_path):
    release = release_state_dict(
        TINY_ARCH['depths'], TINY_WIDTHS, KERNELS, SMALL
    )
    path = str(tmp_path / 'release.pth')
    save_release(path, release)
    model = build(out_indices=(0, 1, 2, 3))
    from slak_mm.models import load_slak_pretrained

    missing, unexpected = load_slak_pretrained(model, path)
    # The per-output norms are new downstream; the pooled norm is not used.
    assert sorted(missing) == [
        f'norm{i}.{p}' for i in range(4) for p in ('bias', 'weight')
    ]
    assert unexpected == []
    torch.testing.assert_close(
        model.stages[0][0].large_kernel.horizontal.conv.weight,
        release['stages.0.0.large_kernel.LoRA2.conv.weight'],
    )


@pytest.mark.parametrize('prefix', [None, 'backbone.'])
def test_openmmlab_checkpoint_with_backbone_prefix(tmp_path, prefix):
    source = build(out_indices=(0, 1, 2, 3))
    state = OrderedDict(
        (f'backbone.{k}', v) for k, v in source.state_dict().items()
    )
    state['decode_head.conv_seg.weight'] = torch.randn(5, 8, 1, 1)
    path = str(tmp_path / 'iter_10.pth')
    torch.save(dict(meta=dict(epoch=1, iter=10), state_dict=state), path)
    init_cfg = dict(type='Pretrained', checkpoint=path)
    if prefix:
        init_cfg['prefix'] = prefix
    model = build(out_indices=(0, 1, 2, 3), init_cfg=init_cfg)
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)


def test_plain_state_dict_without_prefix(tmp_path):
    source = build()
    path = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=source.state_dict()), path)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    torch.testing.assert_close(
        model.stages[1][0].gamma, source.stages[1][0].gamma
    )


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    release = release_state_dict(
        TINY_ARCH['depths'], TINY_WIDTHS, (15, 11, 9, 7), SMALL
    )
    path = str(tmp_path / 'other_kernels.pth')
    save_release(path, release)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError) as info:
        model.init_weights()
    message = str(info.value)
    assert 'stages.0.0.large_kernel.vertical.conv.weight' in message
    assert '(10, 1, 15, 3)' in message and '(10, 1, 13, 3)' in message
    assert 'other_kernels.pth' in message


def test_width_mismatch_raises(tmp_path):
    release = release_state_dict(
        TINY_ARCH['depths'], list(TINY_ARCH['channels']), KERNELS, SMALL
    )
    path = str(tmp_path / 'width1.pth')
    save_release(path, release)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match='does not fit the model'):
        model.init_weights()


def test_wrong_prefix_and_unrelated_files_raise(tmp_path):
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict={'layer1.weight': torch.zeros(3)}), path)
    model = build(
        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    )
    with pytest.raises(KeyError, match="prefix 'backbone.'"):
        model.init_weights()
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(KeyError, match='match the model'):
        model.init_weights()


class NotAllowed:
    pass


def test_loading_refuses_unknown_globals(tmp_path):
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, payload=NotAllowed()), path)
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        safe_torch_load(path)


def test_mmengine_message_hub_loads_with_weights_only(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import _load_checkpoint

    hub = MessageHub.get_instance('slak_mm_test_hub')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('val/mIoU', np.float32(0.25))
    hub.update_info('iter', 3)
    path = str(tmp_path / 'runner.pth')
    torch.save(
        dict(
            state_dict={},
            message_hub=hub.state_dict(),
            meta=dict(seed=np.int64(3)),
        ),
        path,
    )
    loaded = safe_torch_load(path)
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 0.5
    # mmengine's own loader (resume, load_from) works once slak_mm is imported.
    loaded = _load_checkpoint(path, map_location='cpu')
    assert loaded['meta']['seed'] == 3


@pytest.mark.parametrize(
    'first, second',
    [
        ('slak_mm.models.checkpoint', 'slak_mm.converters.release'),
        ('slak_mm.converters.release', 'slak_mm.models.checkpoint'),
    ],
)
def test_loading_and_conversion_import_in_either_order(first, second):
    # A fresh interpreter: an import cycle shows only when a module is the
    # first of its package to be imported.
    code = (
        f'import importlib; importlib.import_module({first!r}); '
        f'importlib.import_module({second!r}); '
        'from slak_mm.converters.release import convert_release_classifier; '
        'from slak_mm.models.checkpoint import load_slak_pretrained; '
        'print("imported")'
    )
    result = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                [REPO, os.environ.get('PYTHONPATH', '')]
            ),
        ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'imported'


@pytest.mark.parametrize(
    'path',
    [
        'slak_mm/models/checkpoint.py',
        'slak_mm/models/slak.py',
        'slak_mm/converters/release.py',
    ],
)
def test_no_import_inside_functions(path):
    # An import inside a function is how an import cycle hides.
    tree = ast.parse(open(os.path.join(REPO, path)).read())
    late = [
        f'{path}:{node.lineno}'
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert not late


def test_pretrained_entries_are_told_apart_one_way():
    """The backbone's init and the model builder split ``init_cfg`` with
    one function: a dict, a list or a tuple, order kept."""
    pretrained = dict(type='Pretrained', checkpoint='a.pth')
    normal = dict(type='TruncNormal', layer='Linear', std=0.02)
    assert split_pretrained_entries(None) == ([], [])
    assert split_pretrained_entries(pretrained) == ([pretrained], [])
    assert split_pretrained_entries(normal) == ([], [normal])
    mixed = (normal, pretrained, dict(type='Constant', val=1.0))
    assert split_pretrained_entries(mixed) == (
        [pretrained],
        [normal, mixed[2]],
    )
    # 'PretrainedInit' is not a registered init type: left to mmengine.
    other = dict(type='PretrainedInit', checkpoint='a.pth')
    assert split_pretrained_entries([other]) == ([], [other])

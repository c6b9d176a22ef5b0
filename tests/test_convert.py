"""tools/model_converters/convert_release_checkpoint.py against an
independent forward."""

import argparse
import textwrap
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from slak_mm.converters.release import (
    convert_release_imagenet,
    detect_release_kind,
    infer_release_config,
)
from slak_mm.models import SLaK, slak_mm_to_release_key
from slak_mm.utils import safe_torch_load

from .helpers import KERNELS, SMALL, TINY_ARCH, release_state_dict
from .tool_utils import load_tool, write_classifier_config

DIMS = [int(c * 1.3) for c in TINY_ARCH['channels']]
NUM_CLASSES = 10


def scaled_release_state_dict(sparsity=0.0):
    """Release-layout weights scaled so activations stay O(1).

    With ``sparsity`` > 0 that fraction of every 2-D/4-D weight is zeroed,
    as a sparse-trained release is.
    """
    state = release_state_dict(
        TINY_ARCH['depths'], DIMS, KERNELS, SMALL, NUM_CLASSES
    )
    for key, value in state.items():
        if key.endswith('weight') and value.dim() in (2, 4):
            value /= value[0].numel() ** 0.5
            if sparsity:
                value[torch.rand_like(value) < sparsity] = 0
        elif key.endswith('gamma'):
            value *= 0.5
    return state


def save_release(path, model, model_ema=None):
    entries = dict(
        model=model,
        optimizer=dict(state={}, param_groups=[]),
        epoch=299,
        args=argparse.Namespace(kernel_size=[*KERNELS, SMALL], Decom=True),
    )
    if model_ema is not None:
        entries['model_ema'] = model_ema
    torch.save(entries, path)


def reference_forward(sd, x, eps=1e-6):
    """The release's forward, written from its description.

    Args:
        sd (dict): Released state dict.
        x (Tensor): Images ``(N, 3, H, W)``.

    Returns:
        Tensor: Logits ``(N, num_classes)``.
    """

    def ln_channels_first(t, prefix):
        mean = t.mean(1, keepdim=True)
        var = (t - mean).pow(2).mean(1, keepdim=True)
        t = (t - mean) / torch.sqrt(var + eps)
        w, b = sd[f'{prefix}.weight'], sd[f'{prefix}.bias']
        return w[:, None, None] * t + b[:, None, None]

    def conv_bn(t, prefix):
        w = sd[f'{prefix}.conv.weight']
        kh, kw = w.shape[2:]
        t = F.conv2d(t, w, padding=(kh // 2, kw // 2), groups=t.shape[1])
        return F.batch_norm(
            t,
            sd[f'{prefix}.bn.running_mean'],
            sd[f'{prefix}.bn.running_var'],
            sd[f'{prefix}.bn.weight'],
            sd[f'{prefix}.bn.bias'],
            training=False,
            eps=1e-5,
        )

    x = F.conv2d(
        x,
        sd['downsample_layers.0.0.weight'],
        sd['downsample_layers.0.0.bias'],
        stride=4,
    )
    x = ln_channels_first(x, 'downsample_layers.0.1')
    for i, depth in enumerate(TINY_ARCH['depths']):
        if i > 0:
            x = ln_channels_first(x, f'downsample_layers.{i}.0')
            x = F.conv2d(
                x,
                sd[f'downsample_layers.{i}.1.weight'],
                sd[f'downsample_layers.{i}.1.bias'],
                stride=2,
            )
        for j in range(depth):
            p = f'stages.{i}.{j}'
            lk = (
                conv_bn(x, f'{p}.large_kernel.LoRA1')
                + conv_bn(x, f'{p}.large_kernel.LoRA2')
                + conv_bn(x, f'{p}.large_kernel.small_conv')
            )
            y = lk.permute(0, 2, 3, 1)
            y = F.layer_norm(
                y,
                (y.shape[-1],),
                sd[f'{p}.norm.weight'],
                sd[f'{p}.norm.bias'],
                eps,
            )
            y = F.linear(y, sd[f'{p}.pwconv1.weight'], sd[f'{p}.pwconv1.bias'])
            y = F.gelu(y)
            y = F.linear(y, sd[f'{p}.pwconv2.weight'], sd[f'{p}.pwconv2.bias'])
            y = sd[f'{p}.gamma'] * y
            x = x + y.permute(0, 3, 1, 2)
    pooled = x.mean([-2, -1])
    pooled = F.layer_norm(
        pooled, (pooled.shape[-1],), sd['norm.weight'], sd['norm.bias'], eps
    )
    return F.linear(pooled, sd['head.weight'], sd['head.bias'])


def build_classifier(config):
    from slak_mm.apis import build_model_from_config

    model, _ = build_model_from_config(config)
    return model


@pytest.mark.parametrize('use_ema', [False, True])
def test_imagenet_conversion_matches_release_forward(
    tmp_path, capsys, use_ema
):
    release = scaled_release_state_dict(sparsity=0.4)
    ema = scaled_release_state_dict()
    src, dst = str(tmp_path / 'release.pth'), str(tmp_path / 'cls.pth')
    save_release(src, release, model_ema=ema)
    argv = [src, dst] + (['--ema'] if use_ema else [])
    config = write_classifier_config(
        tmp_path / 'cls_cfg.py', TINY_ARCH, KERNELS, SMALL, NUM_CLASSES
    )
    load_tool('convert_release_checkpoint').main(
        argv + ['--check-config', config]
    )
    printed = capsys.readouterr().out

    model = build_classifier(config)
    converted = safe_torch_load(dst)
    model.load_state_dict(converted['state_dict'], strict=True)
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(images, mode='tensor')
        expected = reference_forward(ema if use_ema else release, images)
    assert logits.shape == (2, NUM_CLASSES)
    max_diff = (logits - expected).abs().max().item()
    assert max_diff <= 1e-4, max_diff
    # The logits are not trivially small, so the bound means something.
    assert expected.abs().max() > 0.1
    # Printed inference of the hyper-parameters.
    assert 'kernel_sizes=[13, 11, 9, 7]' in printed
    assert 'small_kernel=3' in printed and 'decompose=True' in printed
    assert f'num_classes={NUM_CLASSES}, in_channels={DIMS[-1]}' in printed
    weights = [
        v for v in (ema if use_ema else release).values() if v.dim() in (2, 4)
    ]
    sparsity = sum(int((v == 0).sum()) for v in weights) / sum(
        v.numel() for v in weights
    )
    assert (sparsity > 0.35) != use_ema
    assert f'2-D/4-D weights): {sparsity:.4f}' in printed
    assert converted['meta']['slak_release']['sparsity'] == sparsity


def test_sparsity_and_arch_inferred_for_real_tiny():
    # SLaK-T's tensor shapes, in release names, from our own model.
    ours = SLaK(arch='tiny', out_indices=3, gap_before_final_norm=True)
    release = OrderedDict(
        (slak_mm_to_release_key(k), v) for k, v in ours.state_dict().items()
    )
    release['head.weight'] = torch.zeros(1000, 998)
    release['head.bias'] = torch.zeros(1000)
    weights = [v for k, v in release.items() if v.dim() in (2, 4)]
    for value in weights:
        value.view(-1)[: int(0.4 * value.numel())] = 0
    total = sum(v.numel() for v in weights)
    zeros = sum(int((v == 0).sum()) for v in weights)
    info = infer_release_config(release)
    assert info['backbone']['arch'] == 'tiny'
    assert info['backbone']['width_factor'] == 1.3
    assert info['backbone']['kernel_sizes'] == [51, 49, 47, 13]
    assert info['backbone']['small_kernel'] == 5
    assert info['channels'] == [124, 249, 499, 998]
    assert info['num_classes'] == 1000
    assert info['sparsity'] == pytest.approx(zeros / total)
    assert info['sparsity'] > 0.4 - 1e-3


def test_backbone_only_loads_into_downstream_backbone(tmp_path, capsys):
    release = scaled_release_state_dict()
    src, dst = str(tmp_path / 'release.pth'), str(tmp_path / 'bb.pth')
    save_release(src, release)
    load_tool('convert_release_checkpoint').main([src, dst, '--backbone-only'])
    printed = capsys.readouterr().out
    assert "prefix='backbone.'" in printed
    state = safe_torch_load(dst)['state_dict']
    assert all(k.startswith('backbone.') for k in state)
    # Neither the classifier nor the pooled final norm is kept.
    assert not any(k.startswith(('backbone.norm', 'head')) for k in state)
    model = SLaK(
        arch=TINY_ARCH,
        kernel_sizes=KERNELS,
        small_kernel=SMALL,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=dst, prefix='backbone.'),
    )
    model.init_weights()
    torch.testing.assert_close(
        model.stages[2][1].large_kernel.vertical.conv.weight,
        release['stages.2.1.large_kernel.LoRA1.conv.weight'],
    )
    assert len(state) == len(release) - 4  # norm.weight/bias, head.w/b


def test_inconsistent_shapes_fail_with_key_and_shapes(tmp_path):
    release = scaled_release_state_dict()
    key = 'stages.2.1.large_kernel.LoRA1.conv.weight'
    release[key] = torch.randn(DIMS[2], 1, 11, SMALL)  # stage kernel is 9
    src = str(tmp_path / 'bad.pth')
    save_release(src, release)
    with pytest.raises(ValueError) as info:
        load_tool('convert_release_checkpoint').main(
            [src, str(tmp_path / 'out.pth')]
        )
    message = str(info.value)
    assert 'stages.2.1.large_kernel.vertical.conv.weight' in message
    assert f'({DIMS[2]}, 1, 11, 3)' in message
    assert f'({DIMS[2]}, 1, 9, 3)' in message
    assert not (tmp_path / 'out.pth').exists()


def test_missing_block_tensor_is_named(tmp_path):
    release = scaled_release_state_dict()
    del release['stages.1.0.pwconv2.bias']
    src = str(tmp_path / 'incomplete.pth')
    save_release(src, release)
    with pytest.raises(KeyError, match='pointwise_conv2.bias'):
        load_tool('convert_release_checkpoint').main(
            [src, str(tmp_path / 'out.pth')]
        )


def write_upernet_config(path):
    path.write_text(
        textwrap.dedent(
            f"""
            custom_imports = dict(imports=['slak_mm'])
            default_scope = 'mmseg'
            norm_cfg = dict(type='BN', requires_grad=True)
            model = dict(
                type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor'),
                backbone=dict(
                    type='SLaK', arch={TINY_ARCH!r}, kernel_sizes={KERNELS!r},
                    small_kernel={SMALL}, out_indices=(0, 1, 2, 3)),
                decode_head=dict(
                    type='UPerHead', in_channels={DIMS!r},
                    in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                    channels=8, num_classes=5, norm_cfg=norm_cfg,
                    loss_decode=dict(type='CrossEntropyLoss')),
                auxiliary_head=dict(
                    type='FCNHead', in_channels={DIMS[2]}, in_index=2,
                    channels=8, num_convs=1, num_classes=5,
                    norm_cfg=norm_cfg,
                    loss_decode=dict(type='CrossEntropyLoss')))
            """
        )
    )
    return str(path)


def test_downstream_conversion_round_trip(tmp_path, capsys):
    from slak_mm.apis import build_model_from_config

    config = write_upernet_config(tmp_path / 'upernet.py')
    segmentor, _ = build_model_from_config(config)
    ours = segmentor.state_dict()
    # The release's mmseg 0.x layout: release names under "backbone.".
    release = OrderedDict()
    for key, value in ours.items():
        # norm0..norm3 keep their names in the release's downstream files.
        if key.startswith('backbone.') and not key.startswith('backbone.norm'):
            key = 'backbone.' + slak_mm_to_release_key(key[9:])
        release[key] = value.clone()
    assert 'backbone.stages.0.0.large_kernel.LoRA2.conv.weight' in release
    src, dst = str(tmp_path / 'upernet_release.pth'), str(tmp_path / 'o.pth')
    classes = tuple(f'c{i}' for i in range(5))
    torch.save(
        dict(
            meta=dict(CLASSES=classes, PALETTE=[[0, 0, 0]] * 5),
            state_dict=release,
            optimizer=dict(state={}),
        ),
        src,
    )
    load_tool('convert_release_checkpoint').main(
        [src, dst, '--check-config', config]
    )
    printed = capsys.readouterr().out
    assert 'match the model' in printed
    converted = safe_torch_load(dst)
    assert sorted(converted) == ['meta', 'state_dict']
    assert converted['meta']['dataset_meta']['classes'] == classes
    assert list(converted['state_dict']) == list(ours)
    for key, value in ours.items():
        assert torch.equal(converted['state_dict'][key], value), key


def test_release_kind_and_names_are_checked():
    with pytest.raises(TypeError, match='x.pth: not a dict'):
        detect_release_kind([1], 'x.pth')
    with pytest.raises(KeyError, match='entries: .*epoch'):
        detect_release_kind(dict(epoch=3), 'x.pth')
    ours = SLaK(arch=TINY_ARCH, kernel_sizes=KERNELS, small_kernel=SMALL)
    downstream = dict(state_dict={'backbone.stages.0.0.gamma': torch.ones(1)})
    assert detect_release_kind(downstream) == 'downstream'
    # Our own names in a "model" entry: nothing to convert.
    checkpoint = dict(model=ours.state_dict())
    assert detect_release_kind(checkpoint) == 'imagenet'
    with pytest.raises(ValueError, match='"model_ema" is not in release'):
        convert_release_imagenet(
            dict(checkpoint, model_ema=ours.state_dict()), 'x.pth', ema=True
        )

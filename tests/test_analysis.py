"""ERF, complexity and sparsity analysis: functions and tools."""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from slak_mm.analysis.complexity import count_complexity, uniform_masks
from slak_mm.analysis.erf import (
    accumulate_erf,
    area_ratios,
    contribution_map,
    high_contribution_area,
    layer_output_fn,
    normalize_erf,
)
from slak_mm.analysis.sparsity import format_table, layer_densities
from slak_mm.apis import build_model_from_config
from slak_mm.utils.modules import SubmoduleNotFoundError, resolve_module

from .helpers import KERNELS, REPO, SMALL, TINY_ARCH
from .tool_utils import load_tool, tool_path, write_classifier_config

# ----------------------------------------------------------------- ERF


def test_single_conv_erf_is_its_kernel_footprint():
    conv = nn.Conv2d(3, 4, 7, padding=3, bias=False)
    nn.init.uniform_(conv.weight, 0.1, 1.0)
    images = torch.rand(2, 3, 33, 33)  # positive: every output is > 0
    erf = contribution_map(conv, images)
    expected = np.zeros((33, 33))
    # d(sum_c out[c, 16, 16]) / d x[n, k, 13 + a, 13 + b] = sum_c w[c, k, a, b]
    expected[13:20, 13:20] = conv.weight.sum((0, 1)).detach().double() * 2
    np.testing.assert_allclose(erf, expected, rtol=1e-6)


def test_area_ratios_of_a_uniform_kernel():
    erf = np.zeros((32, 32))
    erf[16 - 3 : 16 + 4, 16 - 3 : 16 + 4] = 5.0  # a 7x7 footprint
    ratios = area_ratios(erf)
    # Squares of side 3, 5, 7 hold 9/49, 25/49 and 49/49 of the total.
    assert ratios[0.2] == (5, 25 / 1024)
    assert ratios[0.3] == (5, 25 / 1024)
    assert ratios[0.5] == (5, 25 / 1024)
    assert ratios[0.99] == (7, 49 / 1024)
    normalized = normalize_erf(erf)
    assert normalized.max() == 1.0 and normalized.min() == 0.0
    # Uniform contributions everywhere: no square holds more than 99%.
    assert high_contribution_area(np.ones((16, 16)), 0.99) is None


def test_erf_averages_images_and_skips_nan():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 1.0)

    def features(x):
        # Finite forward; the gradient is NaN where x < 0 (0 * NaN), like
        # an overflowing backward.
        return conv(torch.where(x >= 0, x, x.sqrt()))

    batches = [torch.ones(1, 1, 9, 9), -torch.ones(1, 1, 9, 9)]
    batches.append(torch.full((1, 1, 9, 9), 3.0))
    erf, used, skipped = accumulate_erf(features, batches)
    assert (used, skipped) == (2, 1)
    expected = np.zeros((9, 9))
    expected[3:6, 3:6] = 1.0
    np.testing.assert_array_equal(erf, expected)


def test_layer_output_fn_takes_the_named_stage():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 1))
    features = layer_output_fn(model, '-2')
    assert features(torch.zeros(1, 1, 5, 5)).shape == (1, 2, 5, 5)
    with pytest.raises(KeyError, match='no submodule'):
        layer_output_fn(model, 'stages')


def test_one_submodule_rule_for_layers_and_module_paths():
    """ERF layers and sparse-training module paths resolve alike; a miss
    is a KeyError and an AttributeError naming the path and what is
    there, closest names first."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU()))
    model.head = nn.Linear(2, 2)
    assert resolve_module(model, None) is model
    assert resolve_module(model, '') is model
    assert resolve_module(model, '1.-1') is model[1][0]
    assert resolve_module(model, 'head') is model.head
    with pytest.raises(SubmoduleNotFoundError) as error:
        resolve_module(model, 'haed', 'layer')
    assert isinstance(error.value, KeyError)
    assert isinstance(error.value, AttributeError)
    assert str(error.value).startswith(
        "layer 'haed': Sequential has no submodule 'haed' "
        "(it has 'head', '0', '1')"
    )
    with pytest.raises(KeyError, match="'1.2': index 2 out of range"):
        resolve_module(model, '1.2')
    with pytest.raises(KeyError, match="no submodule 'weight'"):
        resolve_module(model, '0.weight')  # a parameter, not a module


def write_images(folder, count=2, size=40):
    folder.mkdir()
    generator = np.random.default_rng(0)
    for i in range(count):
        pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f'img_{i}.png')
    return str(folder)


def test_analyze_erf_tool_known_support(tmp_path, capsys):
    """With every layer scale at 0 the blocks are identities, so one
    last-stage pixel sees exactly its 32x32 patch (stem 4x4/s4, then three
    2x2/s2 downsamplings)."""
    config = write_classifier_config(
        tmp_path / 'cfg.py', TINY_ARCH, KERNELS, SMALL
    )
    model, _ = build_model_from_config(config)
    model.init_weights()
    state = model.state_dict()
    for key in state:
        if key.endswith('.gamma'):
            state[key].zero_()
    ckpt = str(tmp_path / 'identity_blocks.pth')
    torch.save(dict(state_dict=state), ckpt)
    images = write_images(tmp_path / 'images')
    out_dir = tmp_path / 'erf'
    erf, ratios = load_tool('analyze_erf').main(
        [config, images, '--checkpoint', ckpt, '--input-size', '96', '128']
        + ['--out-dir', str(out_dir), '--num-images', '2']
    )
    printed = capsys.readouterr().out
    saved = np.load(out_dir / 'erf.npy')
    assert saved.shape == (96, 128)
    np.testing.assert_array_equal(saved, erf)
    # Last stage is 3x4: the central pixel (1, 2) covers rows 32..63 and
    # columns 64..95.
    inside = np.zeros_like(saved, dtype=bool)
    inside[32:64, 64:96] = True
    assert saved[~inside].max() == 0
    assert (saved[inside] > 0).mean() > 0.5
    assert ratios == area_ratios(saved)
    for threshold, (side, ratio) in ratios.items():
        assert f'{threshold:<9}  {side:<4}  {ratio:.4f}' in printed
    with open(out_dir / 'erf_ratios.json') as f:
        assert json.load(f)['ratios']['0.5']['side'] == ratios[0.5][0]
    with Image.open(out_dir / 'erf_heatmap.png') as png:
        assert png.size[0] > 100 and png.size[1] > 100


# ---------------------------------------------------------- complexity


def test_sparse_counts_follow_masks_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 5),
    )
    conv_mask = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    conv_mask.view(-1)[:50] = True
    fc_mask = torch.zeros(5, 256, dtype=torch.bool)
    fc_mask[:, :20] = True  # 100 kept
    report = count_complexity(
        model, (3, 8, 8), masks={'0.weight': conv_mask, '3.weight': fc_mask}
    )
    total = report.to_dict()['total']
    # Conv: 8*8 outputs x 108 weights; linear: 256 x 5.
    assert total['macs'] == 64 * 108 + 256 * 5
    assert total['macs_sparse'] == pytest.approx(64 * 50 + 100)
    assert total['params'] == 108 + 4 + 1280 + 5
    assert total['params_nonzero'] == 50 + 4 + 100 + 5
    assert report.groups['0']['macs_sparse'] == pytest.approx(64 * 50)


def test_bad_masks_are_named():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(KeyError, match='1.weight'):
        count_complexity(model, (4,), masks={'1.weight': torch.ones(4, 4)})
    with pytest.raises(ValueError, match=r'\(4, 3\)'):
        count_complexity(
            model, (4,), masks={'0.weight': torch.ones(4, 3, dtype=bool)}
        )


def test_slak_tiny_classifier_dense_and_uniform_sparse():
    from mmpretrain.models import ImageClassifier

    import slak_mm  # noqa: F401

    model = ImageClassifier(
        backbone=dict(
            type='SLaK', arch='tiny', out_indices=3, gap_before_final_norm=True
        ),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=998),
    )
    masks = uniform_masks(model, 0.4)
    report = count_complexity(model, (3, 224, 224), masks=masks)
    total = report.to_dict()['total']
    assert round(total['macs'] / 1e9, 2) == 8.70
    assert round(total['params'] / 1e6, 1) == 50.7
    # Every conv/linear weight keeps 60%, the rest is dense.
    masked = sum(m.numel() for m in masks.values())
    kept = sum(round(0.6 * m.numel()) for m in masks.values())
    assert total['params_nonzero'] == total['params'] - masked + kept
    assert round(total['params_nonzero'] / 1e6, 1) == 30.5
    # All MACs are conv/linear MACs, so they scale by the density.
    assert total['macs_sparse'] == pytest.approx(0.6 * total['macs'], 1e-4)
    assert round(total['macs_sparse'] / 1e9, 1) == 5.2
    assert list(report.groups)[:5] == [
        'stem',
        'stage0',
        'stage1',
        'stage2',
        'stage3',
    ]


def hand_count_tiny_classifier(state_dict, size):
    """MACs by hand: each conv/linear weight entry is used once per output
    position of its layer; returns (dense, sparse) per group."""
    side = size // 4
    counts = {}
    for key, value in state_dict.items():
        if not key.endswith('weight') or value.dim() not in (2, 4):
            continue
        parts = key.split('.')
        if key.startswith('head.'):
            group, positions = 'head', 1
        elif parts[1] == 'downsample_layers' and parts[2] == '0':
            group, positions = 'stem', side**2
        else:
            stage = int(parts[2])
            group, positions = f'stage{stage}', (side >> stage) ** 2
        dense, sparse = counts.get(group, (0, 0))
        counts[group] = (
            dense + positions * value.numel(),
            sparse + positions * int((value != 0).sum()),
        )
    return counts


def test_get_flops_tool_with_checkpoint_zeros(tmp_path, capsys):
    config = write_classifier_config(
        tmp_path / 'cfg.py', TINY_ARCH, KERNELS, SMALL
    )
    model, _ = build_model_from_config(config)
    state = model.state_dict()
    for value in state.values():
        if value.dim() in (2, 4):
            value[torch.rand_like(value) < 0.3] = 0
    ckpt = str(tmp_path / 'sparse.pth')
    torch.save(dict(state_dict=state), ckpt)
    out_json = str(tmp_path / 'flops.json')
    load_tool('get_flops').main(
        [config, '--shape', '64', '--checkpoint', ckpt, '--out-json', out_json]
    )
    printed = capsys.readouterr().out
    with open(out_json) as f:
        result = json.load(f)
    expected = hand_count_tiny_classifier(state, 64)
    for group, (dense, sparse) in expected.items():
        assert result['groups'][group]['macs'] == dense, group
        assert result['groups'][group]['macs_sparse'] == pytest.approx(
            sparse
        ), group
    # Masks cover the 2-D/4-D weights; biases and norms count as dense.
    nonzero = sum(
        int((p != 0).sum()) if p.dim() in (2, 4) else p.numel()
        for p in model.parameters()
    )
    assert result['total']['params_nonzero'] == nonzero
    assert result['total']['params'] == sum(
        p.numel() for p in model.parameters()
    )
    assert f'{result["total"]["macs_sparse"] / 1e9:.2f}G sparse' in printed


def test_get_flops_tool_reads_a_mask_file(tmp_path):
    config = write_classifier_config(
        tmp_path / 'cfg.py', TINY_ARCH, KERNELS, SMALL
    )
    masks = OrderedDict(
        [('head.fc.weight', torch.zeros(10, 41, dtype=torch.bool))]
    )
    path = str(tmp_path / 'masks.pth')
    torch.save(dict(masks=masks, step=3), path)
    report = load_tool('get_flops').main(
        [config, '--shape', '64', '--masks', path, '--masks-key', 'masks']
    )
    assert report.groups['head']['macs'] == 410
    assert report.groups['head']['macs_sparse'] == 0
    assert report.groups['head']['params_nonzero'] == 10  # the bias


# ------------------------------------------------------------ sparsity


def test_sparsity_report_tool(tmp_path, capsys):
    state = OrderedDict(
        [
            ('conv.weight', torch.ones(4, 2, 3, 3)),
            ('conv.bias', torch.zeros(4)),
            ('fc.weight', torch.ones(10, 10)),
        ]
    )
    state['conv.weight'].view(-1)[:18] = 0  # density 54/72 = 0.75
    state['fc.weight'][:, :9] = 0  # density 0.1
    path = str(tmp_path / 'release_like.pth')
    torch.save(dict(model=state, epoch=1), path)
    rows = load_tool('sparsity_report').main(
        [path, '--out-dir', str(tmp_path / 'report')]
    )
    printed = capsys.readouterr().out
    assert [(r.name, r.density) for r in rows] == [
        ('conv.weight', 0.75),
        ('fc.weight', 0.1),
    ]
    # No "backbone." keys (a released ImageNet file): the whole model is
    # the masked set, as the release trained it.
    assert (
        'Masked set (the whole model, 2 layers): density 0.3721'  # 64 / 172
        in printed
    )
    assert 'Whole model (2 layers): density 0.3721' in printed
    assert format_table(layer_densities(state)) in printed
    csv_lines = (tmp_path / 'report' / 'density.csv').read_text().splitlines()
    assert csv_lines[1] == 'conv.weight,4x2x3x3,72,54,0.750000,1'
    with Image.open(tmp_path / 'report' / 'density.png') as png:
        assert png.size[0] > 100


def test_sparsity_report_separates_the_masked_backbone(tmp_path, capsys):
    """A training checkpoint: sparse backbone, dense head, and the masks of
    SparseTrainingHook, one of whose kept weights was regrown at zero."""
    state = OrderedDict(
        [
            ('backbone.conv.weight', torch.ones(10, 10)),
            ('backbone.conv.bias', torch.ones(10)),
            ('backbone.fc.weight', torch.ones(10, 10)),
            ('decode_head.conv_seg.weight', torch.ones(4, 10, 1, 1)),
        ]
    )
    masks = {'conv.weight': torch.ones(10, 10, dtype=torch.bool)}
    masks['conv.weight'][:, :5] = False  # 50 kept of 100
    state['backbone.conv.weight'][:, :5] = 0
    state['backbone.conv.weight'][0, 7] = 0  # regrown, still zero
    path = str(tmp_path / 'iter_200.pth')
    torch.save(
        dict(
            state_dict=state,
            sparse_training=dict(
                masks=masks, module_path='backbone', optimizer_steps=200
            ),
        ),
        path,
    )
    rows = load_tool('sparsity_report').main([path])
    printed = capsys.readouterr().out
    assert len(rows) == 3
    # backbone: (49 + 100) / 200 non-zero; the masks keep (50 + 100) / 200
    # (fc is selected but dense, so it counts as fully kept).
    assert (
        'Masked set (backbone, 2 layers, marked *): density 0.7450 '
        '(sparsity 0.2550)'
    ) in printed
    assert (
        'by the saved sparse_training masks: density 0.7500 '
        '(what SparseTrainingHook logs)'
    ) in printed
    assert 'Whole model (3 layers): density 0.7875' in printed  # 189 / 240
    # Per group, by the grouping the hook logs (no stage names here).
    assert '  per group: backbone 0.7450\n' in printed
    assert 'backbone.conv.weight*' in printed
    assert 'decode_head.conv_seg.weight ' in printed

    # An explicit --module-path, and one that matches nothing.
    load_tool('sparsity_report').main([path, '--module-path', ''])
    printed = capsys.readouterr().out
    assert 'Masked set (the whole model, 3 layers): density 0.7875' in printed
    assert 'by the saved' not in printed  # the masks cover the backbone
    with pytest.raises(SystemExit, match="no 2-D/4-D weights under 'neck'"):
        load_tool('sparsity_report').main([path, '--module-path', 'neck'])


def test_analyze_erf_without_checkpoint_prints_only_what_matters(tmp_path):
    """No per-parameter initialisation log: the tool prints its summary."""
    import subprocess
    import sys

    config = write_classifier_config(
        tmp_path / 'cfg.py', TINY_ARCH, KERNELS, SMALL
    )
    images = write_images(tmp_path / 'images', count=1)
    result = subprocess.run(
        [sys.executable, tool_path('analyze_erf'), config, images]
        + ['--input-size', '64', '--out-dir', str(tmp_path / 'erf')],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = output.strip().splitlines()
    assert lines[0] == 'No --checkpoint: using randomly initialised weights'
    assert 'ERF of backbone.stages.-1 over 1 images' in output
    assert lines[-1].startswith('Saved erf.npy')
    assert len(lines) <= 10, output
    assert 'Initialized by' not in output and 'TruncNormalInit' not in output

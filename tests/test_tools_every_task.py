"""Every tool on a tiny build of every shipped task.

For segmentation (the demo UperNet config), detection (the demo Cascade
Mask R-CNN config) and classification (the SLaK-T ImageNet config, made
tiny): a released-layout checkpoint goes through
``convert_release_checkpoint``, then ``test`` (a subprocess, exit status and
metric checked), ``deploy``, ``get_flops``, ``analyze_erf`` and
``sparsity_report`` run on the converted file.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from slak_mm.apis import build_model_from_config
from slak_mm.models import slak_mm_to_release_key
from slak_mm.utils import safe_torch_load

from .helpers import randomize_batch_norms, run_tool, saved_test_metrics
from .tiny_configs import (
    classification_config,
    detection_config,
    segmentation_config,
)
from .tool_utils import load_tool

SPARSITY = 0.4


def sparsify_exactly(model, prefix):
    """Zeroes exactly 40% of every 2-D/4-D weight under ``prefix``."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(prefix) and param.dim() in (2, 4):
                order = torch.randperm(param.numel(), generator=generator)
                param.view(-1)[order[: round(SPARSITY * param.numel())]] = 0


def released_checkpoint(model, path, classifier):
    """Saves ``model`` in the release's layout (ImageNet or downstream)."""
    state = OrderedDict()
    for key, value in model.state_dict().items():
        if classifier:
            if key.startswith('backbone.'):
                key = slak_mm_to_release_key(key[len('backbone.') :])
            else:
                key = key.replace('head.fc.', 'head.')
        elif key.startswith('backbone.') and not key.startswith(
            'backbone.norm'
        ):
            key = 'backbone.' + slak_mm_to_release_key(key[9:])
        state[key] = value.clone()
    torch.save(
        dict(model=state, epoch=299) if classifier else dict(state_dict=state),
        path,
    )


def write_images(folder, count=1, size=64):
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3))
    for i in range(count):
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f'{i}.png')
    return str(folder)


def table_lines(printed, first_word='part'):
    lines = printed.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith(first_word)
    )
    end = start + 1
    while end < len(lines) and not lines[end].startswith('Params:'):
        end += 1
    return [
        line
        for line in lines[start:end]
        if not line.startswith(('-:', '   parameters'))
    ]


@pytest.mark.parametrize(
    'task', ['segmentation', 'detection', 'classification']
)
def test_every_tool_on_a_tiny_build(task, tmp_path, capsys):
    make_config = dict(
        segmentation=segmentation_config,
        detection=detection_config,
        classification=classification_config,
    )[task]
    cfg, metric = make_config(tmp_path)
    config = str(tmp_path / f'{task}.py')
    cfg.dump(config)
    classifier = task == 'classification'

    # A "released" checkpoint, sparse backbone, random BN statistics.
    model, _ = build_model_from_config(config)
    model.init_weights()
    randomize_batch_norms(model)
    sparsify_exactly(model, 'backbone.')
    release = str(tmp_path / 'release.pth')
    released_checkpoint(model, release, classifier)

    # convert_release_checkpoint, checked against the config.
    converted = str(tmp_path / 'converted.pth')
    load_tool('convert_release_checkpoint').main(
        [release, converted, '--check-config', config]
    )
    assert 'tensors match the model of' in capsys.readouterr().out
    saved = safe_torch_load(converted)['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(saved[key], value), key

    # test: the real tool in its own process.
    run_tool(
        'tools/test.py',
        config,
        converted,
        '--work-dir',
        str(tmp_path / 'test'),
    )
    assert metric in saved_test_metrics(str(tmp_path / 'test'))

    # deploy: detectors compare backbone + neck features.
    deployed = str(tmp_path / 'deployed.pth')
    report = load_tool('deploy').main(
        [config, converted, deployed, '--shape', '64', '--batch-size', '1']
    )
    printed = capsys.readouterr().out
    assert report['rel_diff'] <= 1e-5
    expected = dict(
        segmentation="mode='tensor' outputs",
        detection='backbone + neck features',
        classification="mode='tensor' outputs",
    )[task]
    assert f'Compared the {expected}' in printed
    assert any(
        'fused_vertical' in k for k in safe_torch_load(deployed)['state_dict']
    )

    # get_flops with the checkpoint's zeros as masks.
    flops = load_tool('get_flops').main(
        [config, '--shape', '64', '--checkpoint', converted]
    )
    printed = capsys.readouterr().out
    backbone_groups = ['stem', 'stage0', 'stage1', 'stage2', 'stage3']
    assert list(flops.groups)[:5] == backbone_groups
    for group in backbone_groups:
        dense = flops.groups[group]['macs']
        assert dense > 0
        assert flops.groups[group]['macs_sparse'] == pytest.approx(
            (1 - SPARSITY) * dense, rel=1e-3
        )
    table = table_lines(printed)
    assert len({len(line) for line in table}) == 1, table
    if task == 'segmentation':
        assert flops.not_run == ['auxiliary_head']
        (aux_row,) = [r for r in table if r.startswith('auxiliary_head')]
        assert aux_row.split()[-2:] == ['-', '-']
        assert '-: auxiliary_head: not run by the counted forward' in printed
        assert 'inference does not run it' in printed
        assert flops.groups['decode_head']['macs'] > 0
    elif task == 'detection':
        assert 'Backbone + neck (extract_feat):' in printed
        assert set(flops.not_run) == {'rpn_head', 'roi_head'}
        assert flops.groups['neck']['macs'] > 0
        assert 'Whole detector' in printed and 'RPN proposals' in printed
        whole = printed.split('Whole detector')[1]
        for head in ('rpn_head', 'roi_head'):
            row = next(r for r in whole.splitlines() if r.startswith(head))
            assert float(row.split()[3]) > 0, row
    else:
        assert flops.not_run == []

    # analyze_erf on one image with the checkpoint.
    images = write_images(tmp_path / 'images')
    erf, ratios = load_tool('analyze_erf').main(
        [config, images, '--checkpoint', converted, '--input-size', '64']
        + ['--num-images', '1', '--out-dir', str(tmp_path / 'erf')]
    )
    printed = capsys.readouterr().out
    assert erf.shape == (64, 64) and erf.max() > 0
    assert 'ERF of backbone.stages.-1 over 1 images' in printed

    # sparsity_report: the backbone (masked set) apart from the whole model.
    rows = load_tool('sparsity_report').main([converted])
    printed = capsys.readouterr().out
    backbone = [r for r in rows if r.name.startswith('backbone.')]
    density = sum(r.nonzero for r in backbone) / sum(r.numel for r in backbone)
    assert density == pytest.approx(1 - SPARSITY, abs=1e-4)
    assert f'Masked set (backbone, {len(backbone)} layers' in printed
    assert '  per group: stem ' in printed and ' stage3 ' in printed
    assert f'density {density:.4f}' in printed
    whole = sum(r.nonzero for r in rows) / sum(r.numel for r in rows)
    assert whole > density  # the dense heads
    assert f'Whole model ({len(rows)} layers): density {whole:.4f}' in printed

"""ONNX export (tools/deployment/export_onnx.py) of the three shipped tasks
with onnxruntime parity, the static adaptive pooling that makes UperNet
exportable at any size, and torch.export of the deploy-form backbone and
classifier."""

import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

from slak_mm.apis import build_model_from_config
from slak_mm.converters import deploy_checkpoint
from slak_mm.converters.deploy import make_test_batch, relative_difference
from slak_mm.converters.onnx import (
    StaticAdaptiveAvgPool2d,
    adaptive_bins,
    build_export_model,
    default_shape,
    export_onnx,
    export_program,
    export_to_onnx,
    export_wrapper,
    static_adaptive_pools,
    torch_outputs,
)
from slak_mm.models.backends import UsesBackend
from slak_mm.utils.checkpoint import CheckpointMismatchError

from .helpers import ONE_BLOCK_ARCH, REPO, randomize_batch_norms
from .tool_utils import load_tool

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

TINY_WIDTHS = [10, 20, 31, 41]
#: Parity of the exported files; they measure ~1e-6 here.
TOLERANCE = 1e-5
SHIPPED = dict(
    classification='configs/classification/slak_t_in1k.py',
    segmentation='configs/segmentation/demo_upernet_slak_ade20k_synthetic.py',
    detection='configs/detection/demo_cascade_mask_rcnn_slak_coco_synthetic.py',
)


def tiny_config(task):
    """The shipped config of ``task`` with a tiny SLaK (real kernel
    sizes are not needed: 13/11/9/7 are larger than the late maps)."""
    cfg = Config.fromfile(osp.join(REPO, SHIPPED[task]))
    backbone = cfg.model.backbone
    backbone.arch = ONE_BLOCK_ARCH
    backbone.kernel_sizes = (13, 11, 9, 7)
    backbone.small_kernel = 3
    backbone.norm_cfg = dict(type='BN', requires_grad=True)
    backbone.init_cfg = None
    if task == 'classification':
        cfg.model.head.num_classes = 4
        cfg.model.head.in_channels = TINY_WIDTHS[-1]
        cfg.data_preprocessor.num_classes = 4
    elif task == 'segmentation':
        cfg.model.decode_head.in_channels = TINY_WIDTHS
        cfg.model.auxiliary_head.in_channels = TINY_WIDTHS[2]
    else:
        cfg.model.neck.in_channels = TINY_WIDTHS
    return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """task -> (config path, checkpoint path): tiny builds of the shipped
    configs with random weights and BN statistics (a 'trained' model)."""
    root = tmp_path_factory.mktemp('export')
    files = {}
    torch.manual_seed(0)
    for task in SHIPPED:
        config = str(root / f'{task}.py')
        tiny_config(task).dump(config)
        model, _ = build_model_from_config(config)
        model.init_weights()
        randomize_batch_norms(model)
        checkpoint = str(root / f'{task}.pth')
        torch.save(dict(state_dict=model.state_dict()), checkpoint)
        files[task] = (config, checkpoint)
    return files


@pytest.mark.parametrize(
    'length, num_bins, expected',
    [
        (4, 3, [(0, 2), (1, 3), (2, 4)]),
        (16, 6, [(0, 3), (2, 6), (5, 8), (8, 11), (10, 14), (13, 16)]),
        (2, 3, [(0, 1), (0, 2), (1, 2)]),
        (6, 2, [(0, 3), (3, 6)]),
    ],
)
def test_adaptive_bins(length, num_bins, expected):
    assert adaptive_bins(length, num_bins) == expected


@pytest.mark.parametrize('size', [(4, 4), (16, 16), (3, 5), (7, 9), (2, 1)])
@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (2, 5), (None, 3)])
def test_static_pool_equals_adaptive_avg_pool(size, output_size):
    x = torch.randn(2, 5, *size)
    expected = F.adaptive_avg_pool2d(x, output_size)
    actual = StaticAdaptiveAvgPool2d(output_size)(x)
    assert actual.shape == expected.shape
    assert relative_difference([expected], [actual])[1] < 1e-6


def test_static_pools_are_swapped_in_and_restored():
    ppm = nn.ModuleList(
        nn.Sequential(nn.AdaptiveAvgPool2d(scale), nn.Identity())
        for scale in (1, 2, 3, 6)
    )
    originals = [branch[0] for branch in ppm]
    with static_adaptive_pools(ppm) as count:
        # The global pool stays (ONNX GlobalAveragePool).
        assert count == 3
        assert ppm[0][0] is originals[0]
        assert [type(b[0]) for b in ppm[1:]] == [StaticAdaptiveAvgPool2d] * 3
        assert ppm[3][0].output_size == (6, 6)
    assert [branch[0] for branch in ppm] == originals
    with pytest.raises(RuntimeError, match='inside'):
        with static_adaptive_pools(ppm):
            raise RuntimeError('inside')
    assert [branch[0] for branch in ppm] == originals


# Output shapes at a 128x128 input (batch 1): 4 classes; segmentation logits
# at the input size; five 32-channel FPN levels at strides 4 to 64.
EXPECTED_OUTPUTS = dict(
    classification=dict(logits=(1, 4)),
    segmentation=dict(seg_logits=(1, 4, 128, 128)),
    detection={
        f'feat{level}': (1, 32, 32 >> level, 32 >> level) for level in range(5)
    },
)


@pytest.mark.parametrize('form', ['deploy', 'training'])
@pytest.mark.parametrize('task', list(SHIPPED))
def test_onnx_matches_pytorch(task, form, trained, tmp_path):
    # 128x128: UperNet's last map is 4x4, which pool scales 3 and 6 do not
    # divide (the case torch's exporter rejects).
    config, checkpoint = trained[task]
    out = str(tmp_path / f'{task}.onnx')
    report = export_onnx(
        config,
        checkpoint,
        out,
        shape=(128, 128),
        training_form=form == 'training',
        verify=True,
        tolerance=TOLERANCE,
    )
    assert report['task'] == task
    assert report['form'] == form
    assert report['outputs'] == EXPECTED_OUTPUTS[task]
    assert report['rel_diff'] <= TOLERANCE
    assert osp.getsize(out) > 0


@pytest.mark.parametrize('shape', [(96, 160), (512, 512)])
def test_upernet_exports_where_pool_scales_do_not_divide(
    shape, trained, tmp_path
):
    # 96x160 -> 3x5 last map (only scale 1 divides both sides); 512x512 ->
    # 16x16 (ADE20K crops; 3 and 6 do not divide).
    config, checkpoint = trained['segmentation']
    report = export_onnx(
        config,
        checkpoint,
        str(tmp_path / 'seg.onnx'),
        shape=shape,
        verify=True,
        tolerance=TOLERANCE,
    )
    assert report['outputs'] == dict(seg_logits=(1, 4) + shape)
    assert report['rel_diff'] <= TOLERANCE


def test_export_leaves_the_model_as_it_was(trained, tmp_path):
    config, checkpoint = trained['segmentation']
    model, _ = build_export_model(config, checkpoint)
    inputs = make_test_batch((64, 96), 1)
    before = torch_outputs(model, inputs)
    export_to_onnx(model, inputs, str(tmp_path / 'seg.onnx'))
    pools = [
        m for m in model.modules() if isinstance(m, StaticAdaptiveAvgPool2d)
    ]
    assert pools == []
    backends = {
        m.backend for m in model.modules() if isinstance(m, UsesBackend)
    }
    assert backends == {'auto'}
    assert torch.equal(torch_outputs(model, inputs)[0], before[0])


def test_deploy_checkpoint_exports_with_deploy_option(trained, tmp_path):
    config, checkpoint = trained['classification']
    deployed = str(tmp_path / 'deploy.pth')
    deploy_checkpoint(config, checkpoint, deployed, shape=(64, 64))
    options = {'model.backbone.deploy': True}
    report = export_onnx(
        config,
        deployed,
        str(tmp_path / 'cls.onnx'),
        shape=(64, 64),
        verify=True,
        tolerance=TOLERANCE,
        cfg_options=options,
    )
    assert report['rel_diff'] <= TOLERANCE
    # Without the option the fused file does not fit the training form.
    with pytest.raises(CheckpointMismatchError, match='deploy=True'):
        export_onnx(config, deployed, str(tmp_path / 'x.onnx'))
    with pytest.raises(ValueError, match='training-form model'):
        export_onnx(
            config,
            deployed,
            str(tmp_path / 'x.onnx'),
            training_form=True,
            cfg_options=options,
        )


def test_verify_fails_beyond_the_tolerance(trained, tmp_path):
    config, checkpoint = trained['classification']
    with pytest.raises(RuntimeError, match='onnxruntime differs'):
        export_onnx(
            config,
            checkpoint,
            str(tmp_path / 'cls.onnx'),
            shape=(64, 64),
            verify=True,
            tolerance=1e-12,
        )


def test_tool_verifies_and_rejects_a_wrong_checkpoint(
    trained, tmp_path, capsys
):
    config, checkpoint = trained['segmentation']
    out = tmp_path / 'seg.onnx'
    load_tool('export_onnx').main(
        [config, checkpoint, '--out', str(out), '--shape', '64', '--verify']
    )
    printed = capsys.readouterr().out
    assert 'segmentation network (deploy form) at input 1x3x64x64' in printed
    assert 'output seg_logits: 1x4x64x64' in printed
    assert 'onnxruntime vs PyTorch: max abs diff' in printed
    assert out.exists()

    # Without --shape: the data preprocessor's size, else 224x224.
    assert (
        load_tool('export_onnx')
        .parse_args([config, checkpoint, '--out', 'm.onnx'])
        .shape
        is None
    )
    assert default_shape(Config.fromfile(config)) == (96, 96)
    classifier_config = trained['classification'][0]
    assert default_shape(Config.fromfile(classifier_config)) == (224, 224)

    # The classifier's checkpoint into the segmentor: the strict-loading
    # error, and no file.
    wrong = trained['classification'][1]
    never = tmp_path / 'never.onnx'
    with pytest.raises(CheckpointMismatchError, match='decode_head'):
        load_tool('export_onnx').main([config, wrong, '--out', str(never)])
    assert not never.exists()


def aten_targets(program):
    return {
        node.target
        for node in program.graph.nodes
        if node.op == 'call_function'
    }


@pytest.mark.parametrize('part', ['backbone', 'classifier'])
def test_torch_export_of_the_deploy_form(part, trained):
    config, checkpoint = trained['classification']
    model, _ = build_export_model(config, checkpoint)
    assert model.backbone.deploy
    inputs = make_test_batch((96, 96), 2)
    module = model.backbone if part == 'backbone' else model
    program = export_program(module, inputs)
    # Only standard ATen ops: the backends' own kernels stay out of graphs.
    namespaces = {
        str(target).split('.')[0]
        for target in aten_targets(program)
        if hasattr(target, 'namespace')
    }
    assert namespaces == {'aten'}
    with torch.no_grad():
        expected = (
            model.backbone(inputs)
            if part == 'backbone'
            else export_wrapper(model)(inputs)
        )
        exported = program.module()(inputs)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    exported = list(exported) if isinstance(exported, tuple) else [exported]
    assert relative_difference(expected, exported)[1] <= 1e-6


def test_onnx_speed_tool_times_both_runtimes(trained, capsys):
    config, checkpoint = trained['classification']
    report = load_tool('benchmark_onnx').main(
        [config, '--checkpoint', checkpoint, '--shape', '64']
        + ['--warmup', '1', '--repeats', '3', '--threads', '1']
    )
    assert set(report['ms']) == {'pytorch', 'onnxruntime'}
    for name, (low, high) in report['spread'].items():
        assert 0 < low <= report['ms'][name] <= high
    assert report['rel_diff'] <= TOLERANCE
    assert report['shape'] == (1, 3, 64, 64)
    printed = capsys.readouterr().out
    assert '| onnxruntime |' in printed and '| pytorch |' in printed


def test_readme_export_commands_run_as_printed(trained, tmp_path):
    """The commands under the README's "### Export", with CONFIG,
    CHECKPOINT and deploy.pth standing for a tiny segmentation build."""
    config, checkpoint = trained['segmentation']
    deployed = str(tmp_path / 'deploy.pth')
    deploy_checkpoint(config, checkpoint, deployed, shape=(64, 64))
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    start = text.index('```bash\n', text.index('\n### Export\n')) + 8
    lines = text[start : text.index('```', start)].strip().splitlines()
    assert len(lines) == 2
    names = dict(CONFIG=config, CHECKPOINT=checkpoint)
    names['deploy.pth'] = deployed
    names['model.onnx'] = str(tmp_path / 'model.onnx')
    for line in lines:
        words = line.split()
        assert words[:2] == ['python', 'tools/deployment/export_onnx.py']
        report = load_tool('export_onnx').main(
            [names.get(word, word) for word in words[2:]]
        )
        assert report['form'] == 'deploy'
    assert osp.getsize(names['model.onnx']) > 0

"""No silent partial loads and no unsafe unpickling, through the real tools.

tools/test.py, tools/train.py (``load_from``, ``--resume``), list-form
``init_cfg`` and the inference helpers must stop on a checkpoint that does
not fit the model, name the file and the keys with both shapes, and never
run code from a checkpoint, even with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
Most tool runs are in-process (``main()`` with ``sys.argv`` set; an uncaught
exception is a non-zero exit); two run as real subprocesses to assert the
exit status.
"""

import copy
import functools
import http.server
import os
import os.path as osp
import pickle
import subprocess
import sys
import threading
import zipfile

import pytest
import torch
from mmengine.config import Config

from slak_mm.apis import build_model_from_config
from slak_mm.datasets import generate_ade20k
from slak_mm.utils import CheckpointFileError, safe_torch_load
from slak_mm.utils.checkpoint import CheckpointMismatchError

from .helpers import (
    KERNELS,
    REPO,
    SMALL,
    TINY_ARCH,
    TINY_WIDTHS,
    release_state_dict,
    save_release,
    shrink_det_config,
)
from .tool_utils import load_tool, tool_path

SEG_DEMO = osp.join(
    REPO, 'configs', 'segmentation', 'demo_upernet_slak_ade20k_synthetic.py'
)
DET_1X = osp.join(
    REPO, 'configs', 'detection', 'cascade_mask_rcnn_slak_t_fpn_1x_coco.py'
)
CLASSES = ('wall', 'building', 'sky', 'floor')


class WritesMarker:
    """A pickle payload: unpickling it without weights_only creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def tiny_backbone(**extra):
    return dict(
        arch=dict(TINY_ARCH),
        kernel_sizes=KERNELS,
        small_kernel=SMALL,
        drop_path_rate=0.0,
        init_cfg=None,
        **extra,
    )


def write_seg_config(path, data_root, num_classes=4, **backbone):
    """A tiny UperNet config from the demo config: 1 iteration."""
    cfg = Config.fromfile(SEG_DEMO)
    cfg.model.backbone.update(tiny_backbone(**backbone))
    widths = TINY_WIDTHS
    cfg.model.decode_head.update(
        in_channels=widths, channels=16, num_classes=num_classes
    )
    cfg.model.auxiliary_head.update(
        in_channels=widths[2], channels=8, num_classes=num_classes
    )
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 1
        cfg[loader].dataset.data_root = data_root
    # Training BNs need more than one value per channel (1x1 PPM branch).
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.max_iters = 1
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.logger.interval = 1
    cfg.dump(str(path))
    return str(path)


def write_det_config(path, shrink_det_config):
    cfg = Config.fromfile(DET_1X)
    shrink_det_config(cfg, tiny_backbone(norm_cfg=dict(type='BN')))
    cfg.dump(str(path))
    return str(path)


def save_model(model, path, **extra):
    torch.save(dict(state_dict=model.state_dict(), **extra), path)
    return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Generated data, tiny configs and checkpoints of every kind."""
    root = tmp_path_factory.mktemp('strict')
    data = generate_ade20k(
        root / 'data',
        num_train=2,
        num_val=2,
        image_size=64,
        num_classes=4,
        seed=5,
    )
    data_root = data['data_root']
    f = dict(root=root, data_root=data_root)
    f['seg'] = write_seg_config(root / 'seg_cfg.py', data_root)
    f['seg5'] = write_seg_config(root / 'seg5_cfg.py', data_root, 5)
    f['det'] = write_det_config(root / 'det_cfg.py', shrink_det_config)

    torch.manual_seed(0)
    seg, _ = build_model_from_config(f['seg'])
    meta = dict(dataset_meta=dict(classes=CLASSES, palette=[[1, 2, 3]] * 4))
    f['seg_ckpt'] = save_model(seg, root / 'seg.pth', meta=meta)
    f['seg_model'] = seg
    # A run's checkpoint: EMA copies and optimizer state are extra entries.
    state = dict(seg.state_dict())
    state['ema_backbone.stem_copy'] = torch.zeros(3)
    torch.save(
        dict(state_dict=state, meta=meta, optimizer=dict(state={})),
        root / 'seg_extra.pth',
    )
    f['seg_extra'] = str(root / 'seg_extra.pth')
    deployed = copy.deepcopy(seg)
    deployed.backbone.switch_to_deploy()
    f['seg_deploy'] = save_model(deployed, root / 'seg_deploy.pth', meta=meta)
    seg5, _ = build_model_from_config(f['seg5'])
    f['seg5_ckpt'] = save_model(seg5, root / 'seg5.pth')
    det, _ = build_model_from_config(f['det'])
    f['det_ckpt'] = save_model(det, root / 'det.pth')

    torch.save([torch.zeros(2)], root / 'list.pth')
    f['list'] = str(root / 'list.pth')
    (root / 'empty.pth').write_bytes(b'')
    f['empty'] = str(root / 'empty.pth')
    (root / 'notes.pth').write_text('model weights: see the release page\n')
    f['text'] = str(root / 'notes.pth')
    with zipfile.ZipFile(root / 'archive.pth', 'w') as archive:
        archive.writestr('weights/readme.txt', 'not a checkpoint')
    f['zip'] = str(root / 'archive.pth')
    whole = open(f['seg_ckpt'], 'rb').read()
    (root / 'iter_1.pth').write_bytes(whole[: len(whole) // 2])
    f['truncated'] = str(root / 'iter_1.pth')
    f['marker'] = root / 'payload_ran'
    torch.save(
        dict(
            state_dict=seg.state_dict(), meta=meta, x=WritesMarker(f['marker'])
        ),
        root / 'evil.pth',
    )
    f['evil'] = str(root / 'evil.pth')
    return f


def run_main(monkeypatch, tool, *args):
    """Runs the tool ``tool`` in this process with ``args``."""
    monkeypatch.setattr(
        sys, 'argv', [tool_path(tool, relative=True), *map(str, args)]
    )
    return load_tool(tool).main()


def run_subprocess(*args, env=None):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


# ---------------------------------------------------------------------------
# The file-level loader
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    'kind, problem',
    [
        ('empty', 'is empty (0 bytes)'),
        ('text', 'is a text file, not a PyTorch checkpoint'),
        ('zip', 'is a zip archive but not a PyTorch checkpoint'),
        ('truncated', 'truncated or damaged zip archive'),
    ],
)
def test_unreadable_files_are_named_with_the_problem(files, kind, problem):
    with pytest.raises(CheckpointFileError) as info:
        safe_torch_load(files[kind])
    assert files[kind] in str(info.value)
    assert problem in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        safe_torch_load(tmp_path / 'nowhere.pth')


def test_payload_runs_only_without_weights_only(files, monkeypatch, tmp_path):
    # The payload is real: an unsafe load runs it.
    marker = tmp_path / 'unsafe_ran'
    path = tmp_path / 'evil.pth'
    torch.save(dict(x=WritesMarker(marker)), path)
    torch.load(path, weights_only=False)
    assert marker.exists()

    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    for load in (
        safe_torch_load,
        _load_checkpoint,
        functools.partial(load_checkpoint, files['seg_model']),
    ):
        with pytest.raises(pickle.UnpicklingError, match='allow-list'):
            load(files['evil'])
    assert not files['marker'].exists()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_urls_load_safely(files, monkeypatch, tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    handler = functools.partial(_QuietHandler, directory=str(files['root']))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{server.server_address[1]}'
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    try:
        loaded = _load_checkpoint(f'{url}/seg.pth')
        assert loaded['meta']['dataset_meta']['classes'] == CLASSES
        with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
            _load_checkpoint(f'{url}/evil.pth')
    finally:
        server.shutdown()
    assert not files['marker'].exists()


# ---------------------------------------------------------------------------
# tools/test.py
# ---------------------------------------------------------------------------


def test_test_py_refuses_deploy_checkpoint_with_exit_status(files):
    result = run_subprocess(
        'tools/test.py',
        files['seg'],
        files['seg_deploy'],
        '--work-dir',
        files['root'] / 'work_deploy',
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'CheckpointMismatchError' in output
    assert 'seg_deploy.pth does not fit the model' in output
    # Every training-form tensor is listed with the model's shape.
    assert (
        'backbone.stages.0.0.large_kernel.vertical.conv.weight: '
        'model (10, 1, 13, 3)'
    ) in output
    assert 'model.backbone.deploy=True' in output
    assert 'Iter(test)' not in output


def refusal_of_test_py(monkeypatch, files, checkpoint, work_dir, *options):
    """The message of the CheckpointMismatchError with which ``tools/test.py``
    refuses ``files[checkpoint]`` for the segmentation config."""
    with pytest.raises(CheckpointMismatchError) as info:
        run_main(
            monkeypatch,
            'test',
            files['seg'],
            files[checkpoint],
            '--work-dir',
            files['root'] / work_dir,
            *options,
        )
    return str(info.value)


def test_test_py_refuses_training_checkpoint_in_deploy_model(
    files, monkeypatch
):
    message = refusal_of_test_py(
        monkeypatch,
        files,
        'seg_ckpt',
        'work_reverse',
        '--cfg-options',
        'model.backbone.deploy=True',
    )
    assert 'backbone.stages.0.0.large_kernel.fused_vertical.weight' in message
    assert 'model.backbone.deploy=False' in message


def test_test_py_refuses_detection_checkpoint(files, monkeypatch):
    message = refusal_of_test_py(monkeypatch, files, 'det_ckpt', 'work_det')
    assert 'det.pth does not fit the model' in message
    assert 'decode_head.conv_seg.weight: model (4, 16, 1, 1)' in message
    assert 'in the checkpoint but not in the model' in message
    assert 'roi_head.*' in message and 'rpn_head.*' in message
    assert 'holds a detection (mmdet) model' in message


def test_test_py_refuses_other_class_count(files, monkeypatch):
    message = refusal_of_test_py(
        monkeypatch, files, 'seg5_ckpt', 'work_classes'
    )
    assert (
        'decode_head.conv_seg.weight: checkpoint (5, 16, 1, 1), '
        'model (4, 16, 1, 1)'
    ) in message
    assert 'auxiliary_head.conv_seg.bias: checkpoint (5,), model (4,)' in (
        message
    )
    assert 'number of classes differs' in message


@pytest.mark.parametrize(
    'kind, error, problem',
    [
        ('empty', CheckpointFileError, 'is empty'),
        ('text', CheckpointFileError, 'is a text file'),
        ('zip', CheckpointFileError, 'not a PyTorch checkpoint'),
        ('list', TypeError, 'holds a list where a checkpoint dict belongs'),
    ],
)
def test_test_py_names_bad_files(files, monkeypatch, kind, error, problem):
    with pytest.raises(error) as info:
        run_main(
            monkeypatch,
            'test',
            files['seg'],
            files[kind],
            '--work-dir',
            files['root'] / f'work_bad_{kind}',
        )
    assert files[kind] in str(info.value)
    assert problem in str(info.value)


def test_test_py_never_runs_a_payload(files):
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    result = run_subprocess(
        'tools/test.py',
        files['seg'],
        files['evil'],
        '--work-dir',
        files['root'] / 'work_evil',
        env=env,
    )
    assert result.returncode != 0
    assert 'allow-list' in result.stderr
    assert not files['marker'].exists()


# ---------------------------------------------------------------------------
# tools/train.py: load_from, --resume, list-form init_cfg
# ---------------------------------------------------------------------------


def test_load_from_loads_all_and_logs_extras(files, monkeypatch, capsys):
    work_dir = files['root'] / 'work_load_from'
    run_main(
        monkeypatch,
        'train',
        files['seg'],
        '--work-dir',
        work_dir,
        '--cfg-options',
        f'load_from={files["seg_extra"]}',
    )
    output = capsys.readouterr()
    log = output.out + output.err
    count = len(files['seg_model'].state_dict())
    assert f'Loaded all {count} tensors of the model' in log
    assert 'entries not in the model, ignored' in log
    assert 'ema_backbone.stem_copy' in log
    assert osp.isfile(work_dir / 'iter_1.pth')


@pytest.mark.parametrize('mode', ['load_from', 'resume'])
def test_train_refuses_misfitting_checkpoint(files, monkeypatch, mode):
    work_dir = files['root'] / f'work_misfit_{mode}'
    extra = (
        ['--resume', files['seg5_ckpt']]
        if mode == 'resume'
        else ['--cfg-options', f'load_from={files["seg5_ckpt"]}']
    )
    with pytest.raises(CheckpointMismatchError) as info:
        run_main(
            monkeypatch, 'train', files['seg'], '--work-dir', work_dir, *extra
        )
    message = str(info.value)
    assert 'seg5.pth does not fit the model' in message
    assert 'checkpoint (5, 16, 1, 1), model (4, 16, 1, 1)' in message
    assert not osp.exists(work_dir / 'iter_1.pth')


def test_resume_needs_a_runner_checkpoint(files, monkeypatch):
    with pytest.raises(ValueError, match='cannot be resumed from') as info:
        run_main(
            monkeypatch,
            'train',
            files['seg'],
            '--work-dir',
            files['root'] / 'work_resume_weights',
            '--resume',
            files['seg_ckpt'],
        )
    assert 'load_from=' in str(info.value)


def test_resume_names_a_half_written_checkpoint(files, monkeypatch):
    with pytest.raises(CheckpointFileError) as info:
        run_main(
            monkeypatch,
            'train',
            files['seg'],
            '--work-dir',
            files['root'] / 'work_trunc',
            '--resume',
            files['truncated'],
        )
    assert files['truncated'] in str(info.value)
    assert 'truncated' in str(info.value)

    # Auto-resume finds it through last_checkpoint, with the same message.
    work_dir = files['root'] / 'work_trunc_auto'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(files['truncated'])
    with pytest.raises(CheckpointFileError, match='truncated'):
        run_main(
            monkeypatch,
            'train',
            files['seg'],
            '--work-dir',
            work_dir,
            '--resume',
        )


def test_resume_names_a_list_not_the_sparse_hook(files, monkeypatch):
    with pytest.raises(TypeError) as info:
        run_main(
            monkeypatch,
            'train',
            files['seg'],
            '--work-dir',
            files['root'] / 'work_list',
            '--resume',
            files['list'],
        )
    assert 'list.pth holds a list where a checkpoint dict belongs' in str(
        info.value
    )


def write_list_init_config(files, name, checkpoint):
    cfg = Config.fromfile(files['seg'])
    cfg.model.backbone.init_cfg = [
        dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02),
        dict(type='Pretrained', checkpoint=checkpoint),
    ]
    path = str(files['root'] / name)
    cfg.dump(path)
    return path


def test_list_init_cfg_goes_through_the_slak_loader(files, monkeypatch):
    release = release_state_dict(
        TINY_ARCH['depths'], TINY_WIDTHS, (15, 11, 9, 7), SMALL
    )
    path = str(files['root'] / 'release_k15.pth')
    save_release(path, release)
    config = write_list_init_config(files, 'list_init_cfg.py', path)
    with pytest.raises(CheckpointMismatchError) as info:
        run_main(
            monkeypatch,
            'train',
            config,
            '--work-dir',
            files['root'] / 'work_list_init',
        )
    message = str(info.value)
    assert 'release_k15.pth does not fit the model' in message
    assert (
        'stages.0.0.large_kernel.vertical.conv.weight: checkpoint '
        '(10, 1, 15, 3), model (10, 1, 13, 3)'
    ) in message


def test_list_init_cfg_loads_a_released_checkpoint(tmp_path):
    from slak_mm.models import SLaK

    release = release_state_dict(
        TINY_ARCH['depths'], TINY_WIDTHS, KERNELS, SMALL
    )
    path = str(tmp_path / 'release.pth')
    save_release(path, release)
    model = SLaK(
        arch=TINY_ARCH,
        kernel_sizes=KERNELS,
        small_kernel=SMALL,
        out_indices=(0, 1, 2, 3),
        init_cfg=[
            dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=0.02),
            dict(type='Constant', layer=['LayerNorm'], val=1.0, bias=0.0),
            dict(type='Pretrained', checkpoint=path),
        ],
    )
    model.init_weights()
    torch.testing.assert_close(
        model.stages[2][1].large_kernel.vertical.conv.weight,
        release['stages.2.1.large_kernel.LoRA1.conv.weight'],
    )
    torch.testing.assert_close(
        model.stages[3][0].pointwise_conv2.bias,
        release['stages.3.0.pwconv2.bias'],
    )
    # The new output norms get the Constant entry, not the checkpoint.
    assert torch.equal(model.norm0.weight, torch.ones_like(model.norm0.weight))


@pytest.mark.parametrize('mode', ['load_from', 'resume', 'init_cfg'])
def test_train_never_runs_a_payload(files, monkeypatch, mode):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    config = files['seg']
    extra = []
    if mode == 'load_from':
        extra = ['--cfg-options', f'load_from={files["evil"]}']
    elif mode == 'resume':
        extra = ['--resume', files['evil']]
    else:
        config = write_list_init_config(
            files, 'evil_init_cfg.py', files['evil']
        )
    with pytest.raises(pickle.UnpicklingError, match='allow-list'):
        run_main(
            monkeypatch,
            'train',
            config,
            '--work-dir',
            files['root'] / f'work_evil_{mode}',
            *extra,
        )
    assert not files['marker'].exists()


# ---------------------------------------------------------------------------
# Inference helpers
# ---------------------------------------------------------------------------


def test_init_model_segmentation(files):
    from mmseg.apis import inference_model

    from slak_mm.apis import init_model

    model = init_model(files['seg'], files['seg_ckpt'], device='cpu')
    torch.testing.assert_close(
        model.decode_head.conv_seg.weight,
        files['seg_model'].decode_head.conv_seg.weight,
    )
    assert tuple(model.dataset_meta['classes']) == CLASSES
    image = osp.join(
        files['data_root'], 'images', 'validation', 'ADE_val_00000001.jpg'
    )
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape[-2:] == (64, 64)

    deployed = init_model(
        files['seg'],
        files['seg_deploy'],
        cfg_options={'model.backbone.deploy': True},
    )
    assert deployed.backbone.deploy
    with pytest.raises(CheckpointMismatchError, match='deploy=True'):
        init_model(files['seg'], files['seg_deploy'])
    with pytest.raises(CheckpointMismatchError, match='number of classes'):
        init_model(files['seg'], files['seg5_ckpt'])


def test_init_model_detection_and_check_checkpoint(files):
    from mmdet.apis import inference_detector

    from slak_mm.apis import check_checkpoint, init_model

    model = init_model(files['det'], files['det_ckpt'])
    image = osp.join(
        files['data_root'], 'images', 'validation', 'ADE_val_00000001.jpg'
    )
    result = inference_detector(model, image)
    assert result.pred_instances.bboxes.shape[-1] == 4

    check_checkpoint(files['det'], files['det_ckpt'])
    with pytest.raises(CheckpointMismatchError) as info:
        check_checkpoint(files['det'], files['seg_ckpt'])
    assert 'holds a segmentation (mmseg) model' in str(info.value)


def test_init_model_classification(files):
    from mmpretrain import ImageClassificationInferencer

    from slak_mm.apis import init_model

    def write(num_classes):
        cfg = Config.fromfile(
            osp.join(REPO, 'configs', 'classification', 'slak_t_in1k.py')
        )
        cfg.model.backbone.update(tiny_backbone())
        cfg.model.head.update(
            num_classes=num_classes, in_channels=TINY_WIDTHS[-1]
        )
        path = str(files['root'] / f'cls{num_classes}_cfg.py')
        cfg.dump(path)
        return path

    config, config10 = write(4), write(10)
    model, _ = build_model_from_config(config)
    meta = dict(dataset_meta=dict(classes=CLASSES))
    checkpoint = save_model(model, files['root'] / 'cls4.pth', meta=meta)
    model10, _ = build_model_from_config(config10)
    checkpoint10 = save_model(model10, files['root'] / 'cls10.pth')

    loaded = init_model(config, checkpoint)
    image = osp.join(
        files['data_root'], 'images', 'validation', 'ADE_val_00000001.jpg'
    )
    result = ImageClassificationInferencer(model=loaded)(image)[0]
    assert result['pred_class'] in CLASSES
    with pytest.raises(CheckpointMismatchError) as info:
        init_model(config, checkpoint10)
    message = str(info.value)
    assert 'head.fc.weight: checkpoint (10, 41), model (4, 41)' in message
    assert 'number of classes differs' in message


# ---------------------------------------------------------------------------
# Launchers and configs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh'])
def test_launchers_default_to_the_project_venv(tmp_path, script):
    (tmp_path / 'tools').mkdir()
    # Both launchers run tools/dist_run.sh next to them.
    for name in (script, 'dist_run.sh'):
        with open(tool_path(name)) as f:
            (tmp_path / 'tools' / name).write_text(f.read())
    launcher = tmp_path / 'tools' / script
    fake = tmp_path / '.venv' / 'bin' / 'python'
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "venv python: $@"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    result = subprocess.run(
        ['bash', str(launcher), 'cfg.py', 'ckpt.pth', '1'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('venv python: -m torch.distributed.run')
    # PYTHON still wins when set.
    env['PYTHON'] = str(fake).replace('python', 'missing')
    result = subprocess.run(
        ['bash', str(launcher), 'cfg.py', 'ckpt.pth', '1'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0


def shipped_configs():
    for folder, _, names in os.walk(osp.join(REPO, 'configs')):
        for name in sorted(names):
            if name.endswith('.py') and '_base_' not in folder:
                yield osp.relpath(osp.join(folder, name), REPO)


@pytest.mark.parametrize('config', list(shipped_configs()))
def test_no_shipped_config_keeps_a_single_checkpoint(config):
    # mmengine deletes the previous checkpoint before writing the next, so
    # with max_keep_ckpts=1 a kill during the write leaves nothing to resume.
    cfg = Config.fromfile(osp.join(REPO, config))
    checkpoint_hook = cfg.get('default_hooks', {}).get('checkpoint', {})
    assert checkpoint_hook.get('max_keep_ckpts', -1) != 1


def test_every_torch_load_passes_weights_only():
    import ast

    offenders = []
    for top in ('slak_mm', 'tools', 'tests', 'docs'):
        for folder, _, names in os.walk(osp.join(REPO, top)):
            for name in names:
                if not name.endswith('.py'):
                    continue
                path = osp.join(folder, name)
                tree = ast.parse(open(path).read())
                for node in ast.walk(tree):
                    if not (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr == 'load'
                        and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == 'torch'
                    ):
                        continue
                    safe = any(
                        k.arg == 'weights_only'
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is True
                        for k in node.keywords
                    )
                    if not safe:
                        offenders.append(f'{path}:{node.lineno}')
    # The payload test above loads unsafely on purpose.
    offenders = [o for o in offenders if 'test_strict_loading.py' not in o]
    assert not offenders, offenders


def readme_block(heading, language):
    """The first ``language`` code block after ``heading`` in the README."""
    text = open(osp.join(REPO, 'README.md')).read()
    start = text.index(f'\n{heading}\n', text.index('\n## Inference\n'))
    start = text.index(f'```{language}\n', start) + len(language) + 4
    return text[start : text.index('```', start)]


def test_readme_segmentation_inference_runs_as_printed(tmp_path, monkeypatch):
    """The README's segmentation snippet, in a copy of the layout that
    ``make demo-quick`` leaves (demo config, its data and checkpoint, deployed
    with the README's tools/model_converters/deploy.py command)."""
    for name in ('configs', 'tools'):
        os.symlink(osp.join(REPO, name), tmp_path / name)
    generate_ade20k(
        tmp_path / 'data' / 'synthetic',
        num_train=1,
        num_val=1,
        image_size=96,
        num_classes=4,
        seed=0,
    )
    model, _ = build_model_from_config(SEG_DEMO)
    work_dir = tmp_path / 'work_dirs' / 'demo'
    work_dir.mkdir(parents=True)
    meta = dict(dataset_meta=dict(classes=CLASSES, palette=[[9, 9, 9]] * 4))
    save_model(model, work_dir / 'iter_200.pth', meta=meta)

    commands = readme_block('### Segmentation', 'bash')
    lines = commands.replace('\\\n', ' ').splitlines()
    deploy_args = next(
        line.split()[2:]
        for line in lines
        if tool_path('deploy', relative=True) in line
    )
    monkeypatch.chdir(tmp_path)
    load_tool('deploy').main(deploy_args)
    assert (work_dir / 'deploy.pth').is_file()

    snippet = readme_block('### Segmentation', 'python')
    result = subprocess.run(
        [sys.executable, '-c', snippet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "('wall', 'building', 'sky', 'floor')" in result.stdout
    assert result.stdout.count('torch.Size([1, 96, 96])') == 2
    assert any((tmp_path / 'work_dirs' / 'demo' / 'vis').rglob('*.png'))


@pytest.mark.parametrize(
    'registry', ['mmseg.registry', 'mmdet.registry', 'mmpretrain.registry']
)
def test_toolkit_tools_can_build_the_strict_runner(registry):
    # runner_type='StrictLoadingRunner' works from the toolkits' own tools.
    import importlib

    from slak_mm.engine import StrictLoadingRunner

    runners = importlib.import_module(registry).RUNNERS
    assert runners.get('StrictLoadingRunner') is StrictLoadingRunner

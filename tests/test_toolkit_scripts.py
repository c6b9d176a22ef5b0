"""The toolkits' own scripts and APIs load SLaK checkpoints strictly.

``mmseg/.mim/tools/test.py``, ``mmdet/.mim/tools/test.py`` and
``mmpretrain/.mim/tools/test.py`` (what ``mim test`` runs), their
``train.py`` with ``load_from``, whole-model ``Pretrained`` init and the
toolkits' inference APIs know nothing of slak_mm beyond the config's
``custom_imports``. A checkpoint that does not fit must stop each of them
with :class:`~slak_mm.utils.checkpoint.CheckpointMismatchError`, a message
naming the file, and a non-zero exit; a fitting one must give the metrics
of our ``tools/test.py``.
"""

import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from slak_mm.apis import build_model_from_config
from slak_mm.utils.checkpoint import CheckpointMismatchError

from .helpers import randomize_batch_norms, run_tool, saved_test_metrics
from .tiny_configs import (
    classification_config,
    detection_config,
    segmentation_config,
)

TASKS = dict(
    segmentation=(segmentation_config, 'mmseg'),
    detection=(detection_config, 'mmdet'),
    classification=(classification_config, 'mmpretrain'),
)


def toolkit_script(package, name):
    """``<package>/.mim/tools/<name>``, as installed with the toolkit."""
    module = __import__(package)
    path = osp.join(osp.dirname(module.__file__), '.mim', 'tools', name)
    assert osp.isfile(path), path
    return path


def run_script(*args):
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600
    )
    return result.returncode, result.stdout + result.stderr


def fitting_checkpoint(config, path):
    """Saves the config's model with initialised, randomised weights."""
    torch.manual_seed(0)
    model, cfg = build_model_from_config(config)
    model.init_weights()
    randomize_batch_norms(model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return model


@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    """Per task: the tiny config written to disk and a fitting checkpoint."""
    made = {}
    for task, (make_config, _) in TASKS.items():
        folder = tmp_path_factory.mktemp(task)
        cfg, metric = make_config(folder)
        config = str(folder / f'{task}.py')
        cfg.dump(config)
        checkpoint = str(folder / 'fitting.pth')
        fitting_checkpoint(config, checkpoint)
        made[task] = dict(
            folder=folder, config=config, metric=metric, checkpoint=checkpoint
        )
    return made


def deploy_form(config, checkpoint, path):
    """The checkpoint with its large kernels fused (deploy form)."""
    model, _ = build_model_from_config(config)
    model.load_state_dict(
        torch.load(checkpoint, weights_only=True)['state_dict']
    )
    model.backbone.switch_to_deploy()
    torch.save(dict(state_dict=model.state_dict()), path)


def without_one_tensor(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    removed = next(k for k in state if k.endswith('pointwise_conv1.weight'))
    del state[removed]
    torch.save(dict(state_dict=state), path)
    return removed


@pytest.mark.parametrize('task', list(TASKS))
def test_toolkit_test_script_matches_ours_and_refuses_wrong(task, builds):
    build = builds[task]
    package = TASKS[task][1]
    script = toolkit_script(package, 'test.py')
    folder = build['folder']

    # A fitting checkpoint: the toolkit's script and ours agree.
    code, output = run_script(
        script,
        build['config'],
        build['checkpoint'],
        '--work-dir',
        str(folder / 'theirs'),
    )
    assert code == 0, output[-3000:]
    run_tool(
        'tools/test.py',
        build['config'],
        build['checkpoint'],
        '--work-dir',
        str(folder / 'ours'),
    )
    theirs = saved_test_metrics(str(folder / 'theirs'))
    ours = saved_test_metrics(str(folder / 'ours'))
    assert build['metric'] in theirs
    assert theirs[build['metric']] == ours[build['metric']]

    # A wrong one, a different kind per task.
    wrong = str(folder / 'wrong.pth')
    if task == 'segmentation':
        deploy_form(build['config'], build['checkpoint'], wrong)
        expected = ['deploy form', 'large_kernel.vertical.conv.weight']
    elif task == 'detection':
        # Another task's checkpoint.
        wrong = builds['segmentation']['checkpoint']
        expected = ['holds a segmentation (mmseg) model']
    else:
        removed = without_one_tensor(build['checkpoint'], wrong)
        expected = ['1 tensor(s) of the model missing', removed]
    code, output = run_script(
        script, build['config'], wrong, '--work-dir', str(folder / 'wrong')
    )
    assert code != 0
    assert 'CheckpointMismatchError' in output
    assert f'{wrong} does not fit the model' in output
    for text in expected:
        assert text in output, output[-3000:]


def test_toolkit_train_script_refuses_load_from(builds):
    build = builds['segmentation']
    wrong = builds['classification']['checkpoint']
    code, output = run_script(
        toolkit_script('mmseg', 'train.py'),
        build['config'],
        '--work-dir',
        str(build['folder'] / 'train'),
        '--cfg-options',
        f'load_from={wrong}',
    )
    assert code != 0
    assert 'CheckpointMismatchError' in output
    assert f'{wrong} does not fit the model' in output
    assert 'holds a classification (mmpretrain) model' in output


def other_class_count(build, path):
    """A checkpoint of the same model with one class more."""
    cfg = Config.fromfile(build['config'])
    if 'decode_head' in cfg.model:
        cfg.model.decode_head.num_classes += 1
        cfg.model.auxiliary_head.num_classes += 1
    else:
        cfg.model.head.num_classes += 1
    model, _ = build_model_from_config(cfg)
    torch.save(dict(state_dict=model.state_dict()), path)


@pytest.mark.parametrize('task', ['segmentation', 'classification'])
def test_toolkit_runner_refuses_other_class_count(task, builds, tmp_path):
    # A runner built the way the toolkits' test.py builds it.
    build = builds[task]
    wrong = str(tmp_path / 'classes.pth')
    other_class_count(build, wrong)
    cfg = Config.fromfile(build['config'])
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = wrong
    runner = Runner.from_cfg(cfg)
    with pytest.raises(CheckpointMismatchError, match='number of classes'):
        runner.test()


def test_resume_of_toolkit_runner_refuses_deploy_form(builds, tmp_path):
    build = builds['segmentation']
    wrong = str(tmp_path / 'deploy.pth')
    deploy_form(build['config'], build['checkpoint'], wrong)
    cfg = Config.fromfile(build['config'])
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = wrong
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    with pytest.raises(CheckpointMismatchError, match='deploy form'):
        runner.train()


@pytest.mark.parametrize('task', list(TASKS))
def test_whole_model_pretrained_init_is_strict(task, builds, tmp_path):
    build = builds[task]
    wrong = str(tmp_path / 'wrong.pth')
    without_one_tensor(build['checkpoint'], wrong)
    for checkpoint, fits in ((build['checkpoint'], True), (wrong, False)):
        cfg = Config.fromfile(build['config'])
        cfg.model.init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
        init_default_scope(cfg.default_scope)
        model, _ = build_model_from_config(cfg)
        if fits:
            model.init_weights()
            expected = torch.load(checkpoint, weights_only=True)['state_dict']
            for key, value in model.state_dict().items():
                assert torch.equal(value, expected[key]), key
        else:
            with pytest.raises(CheckpointMismatchError, match='missing'):
                model.init_weights()


def test_toolkit_inference_apis_refuse_wrong(builds, tmp_path):
    from mmdet.apis import DetInferencer, init_detector
    from mmpretrain import get_model
    from mmseg.apis import MMSegInferencer
    from mmseg.apis import init_model as init_segmentor

    seg, det, cls = (
        builds[t] for t in ('segmentation', 'detection', 'classification')
    )
    deployed = str(tmp_path / 'deploy.pth')
    deploy_form(seg['config'], seg['checkpoint'], deployed)
    calls = [
        (
            lambda: init_segmentor(seg['config'], deployed, device='cpu'),
            deployed,
        ),
        (
            lambda: MMSegInferencer(
                seg['config'], weights=deployed, device='cpu'
            ),
            deployed,
        ),
        (
            lambda: init_detector(
                det['config'], seg['checkpoint'], device='cpu'
            ),
            seg['checkpoint'],
        ),
        (
            lambda: DetInferencer(
                det['config'], weights=cls['checkpoint'], device='cpu'
            ),
            cls['checkpoint'],
        ),
        (
            lambda: get_model(
                cls['config'], pretrained=det['checkpoint'], device='cpu'
            ),
            det['checkpoint'],
        ),
    ]
    for call, wrong in calls:
        with pytest.raises(CheckpointMismatchError) as info:
            call()
        assert f'{wrong} does not fit the model' in str(info.value)
    # A fitting checkpoint still loads through them.
    model = init_segmentor(seg['config'], seg['checkpoint'], device='cpu')
    expected = torch.load(seg['checkpoint'], weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key

"""Train -> test -> resume through tools/ for all three toolkits, on
generated data, judged by the metrics and checkpoints the runs save; plus
a 2-process training run through dist_train.sh."""

import math
import os
import os.path as osp
import pickle
import socket
import sys

import pytest
import torch
from mmengine.config import Config

from slak_mm.datasets import generate_ade20k

from .e2e_tasks import (
    SEG_DEMO,
    classification_task,
    detection_task,
    segmentation_task,
)
from .helpers import (
    run_command,
    run_tool,
    saved_scalars,
    saved_test_metrics,
)


def assert_metrics(metrics, expected):
    for key, (low, high) in expected.items():
        assert key in metrics, (key, sorted(metrics))
        assert low <= metrics[key] <= high, (key, metrics[key])


@pytest.mark.parametrize(
    'make_task',
    [segmentation_task, classification_task, detection_task],
    ids=['segmentation', 'classification', 'detection'],
)
def test_train_test_resume(make_task, tmp_path):
    task = make_task(tmp_path)

    # Train: every iteration logged once, the validation at the end.
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', task.config, '--work-dir', work_dir)
    train, val = saved_scalars(work_dir)
    assert sorted(train) == list(range(1, task.total_iters + 1))
    assert all(math.isfinite(r['loss']) for r in train.values())
    (last_val,) = val
    assert_metrics(last_val, task.metrics)
    final = torch.load(
        task.checkpoint(work_dir, task.length),
        map_location='cpu',
        weights_only=True,
    )
    assert final['meta']['iter'] == task.total_iters

    # Test the final checkpoint: the metrics of the validation that ended
    # the training (the same weights on the same split), one prediction
    # per test sample in --out and, where painted, one image in --show-dir.
    test_dir = str(tmp_path / 'test')
    out = str(tmp_path / task.out)
    show_dir = tmp_path / 'painted'
    paint = ['--show-dir', str(show_dir)] if task.paint else []
    run_tool(
        'tools/test.py',
        task.config,
        task.checkpoint(work_dir, task.length),
        '--work-dir',
        test_dir,
        '--out',
        out,
        *paint,
    )
    if task.paint:
        painted = [
            p for p in show_dir.rglob('*') if p.suffix in ('.png', '.jpg')
        ]
        assert len(painted) == task.num_test, painted
    tested = saved_test_metrics(test_dir)
    assert_metrics(tested, task.metrics)
    for key in task.metrics:
        assert tested[key] == pytest.approx(last_val[key], abs=1e-6), key
    if osp.isdir(out):
        assert len(os.listdir(out)) == task.num_test
    else:
        with open(out, 'rb') as f:
            assert len(pickle.load(f)) == task.num_test

    # Resume from the middle: the run goes on at the next iteration with
    # the saved schedule and optimizer state, and ends where the
    # uninterrupted run ended.
    middle = task.length // 2
    resumed_dir = str(tmp_path / 'resumed')
    run_tool(
        'tools/train.py',
        task.config,
        '--work-dir',
        resumed_dir,
        '--resume',
        task.checkpoint(work_dir, middle),
    )
    resumed_train, resumed_val = saved_scalars(resumed_dir)
    first = middle * task.iters_per_epoch + 1
    assert sorted(resumed_train) == list(range(first, task.total_iters + 1))
    for step, record in resumed_train.items():
        assert record['lr'] == pytest.approx(train[step]['lr'], rel=1e-6)
    assert_metrics(resumed_val[-1], task.metrics)
    resumed_final = torch.load(
        task.checkpoint(resumed_dir, task.length),
        map_location='cpu',
        weights_only=True,
    )
    assert resumed_final['meta']['iter'] == task.total_iters
    assert resumed_final['meta']['epoch'] == final['meta']['epoch']
    states = final['optimizer']['state']
    resumed_states = resumed_final['optimizer']['state']
    assert resumed_states.keys() == states.keys()
    # AdamW's step counts every update since the first iteration (one per
    # accumulative_counts iterations).
    accumulate = Config.fromfile(task.config).optim_wrapper.get(
        'accumulative_counts', 1
    )
    for key, state in states.items():
        assert int(resumed_states[key]['step']) == int(state['step'])
        assert int(state['step']) == task.total_iters // accumulate


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_train_two_processes(tmp_path):
    data = generate_ade20k(
        tmp_path / 'data',
        num_train=8,
        num_val=2,
        image_size=64,
        num_classes=4,
        seed=4,
    )
    root = data['data_root']
    # A free port, not a fixed one: another run of this suite on the
    # machine (or another launcher) may hold any fixed port.
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    work_dir = tmp_path / 'work'
    output = run_command(
        [
            'bash',
            'tools/dist_train.sh',
            SEG_DEMO,
            '2',
            '--work-dir',
            str(work_dir),
            '--cfg-options',
            f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            'train_cfg.max_iters=2',
            'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2',
            'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2',
        ],
        env=env,
    )
    assert 'using the gloo backend' in output
    # mmengine reports the world size as "GPU number".
    assert 'Distributed training: True' in output
    assert 'GPU number: 2' in output
    train, val = saved_scalars(str(work_dir))
    assert sorted(train) == [1, 2]
    (last_val,) = val
    assert 0.0 <= last_val['mIoU'] <= 100.0
    saved = torch.load(
        work_dir / 'iter_2.pth', map_location='cpu', weights_only=True
    )
    assert saved['meta']['iter'] == 2

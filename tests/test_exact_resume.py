"""Kill -9 and ``--resume`` repeat the uninterrupted run bit for bit.

The real ``tools/train.py`` trains the demo segmentation config (stochastic
depth 0.1, random resize, crop and flip in the main process, dynamic sparse
training) with an ``EMAHook`` added, shortened to a few iterations with a
checkpoint and a validation every ``INTERVAL``. Runs are killed with SIGKILL
after a logged iteration or in the middle of writing a checkpoint, resumed
with ``--resume``, and every tensor of their final checkpoint (weights, BN
statistics, masks, optimizer, EMA, scheduler and generator states) must
equal the uninterrupted run's. DDP runs use 2 CPU processes (gloo).
"""

import contextlib
import itertools
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from slak_mm.datasets import generate_ade20k
from slak_mm.utils import safe_torch_load

from .helpers import REPO

DEMO_CONFIG = osp.join(
    REPO, 'configs', 'segmentation', 'demo_upernet_slak_ade20k_synthetic.py'
)
MAX_ITERS = 9
INTERVAL = 3  # checkpoint and validation
FINAL_CHECKPOINT = f'iter_{MAX_ITERS}.pth'
# Everything a resumed run carries on from (the message hub holds timings).
COMPARED = (
    'state_dict',
    'optimizer',
    'param_schedulers',
    'sparse_training',
    'ema_state_dict',
    'rng_states',
)
RUN_TIMEOUT = 240
_RUNS = itertools.count()


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """The demo config at 64x64, 2 images per batch, ``MAX_ITERS``
    iterations, mask updates every 2 steps and an EMA copy, on generated
    data."""
    root = tmp_path_factory.mktemp('resume_data')
    data_root = generate_ade20k(
        root, num_train=16, num_val=2, image_size=64, seed=0
    )['data_root']
    path = root / 'demo_resume.py'
    path.write_text(
        f"""_base_ = [{DEMO_CONFIG!r}]
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.8, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(data_root={data_root!r})
train_dataloader = dict(
    batch_size=2, dataset=dict(dataset, pipeline=train_pipeline)
)
val_dataloader = dict(dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={MAX_ITERS}, val_interval={INTERVAL})
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='PolyLR', power=1.0, begin=3, end={MAX_ITERS}, by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval={INTERVAL})
)
custom_hooks = [
    dict(_base_.sparse_training, update_interval=2),
    dict(type='EMAHook', momentum=0.01),
]
"""
    )
    return str(path)


@pytest.fixture(scope='module')
def uninterrupted(config, tmp_path_factory):
    """The final checkpoint of an uninterrupted one-process run."""
    work_dir = str(tmp_path_factory.mktemp('uninterrupted'))
    _finish(_launch(config, work_dir))
    return osp.join(work_dir, FINAL_CHECKPOINT)


@pytest.fixture(scope='module')
def uninterrupted_ddp(config, tmp_path_factory):
    """The final checkpoint of an uninterrupted 2-process run."""
    work_dir = str(tmp_path_factory.mktemp('uninterrupted_ddp'))
    _finish(_launch(config, work_dir, nproc=2))
    return osp.join(work_dir, FINAL_CHECKPOINT)


def test_kills_during_a_checkpoint_write_and_after_an_iteration(
    config, uninterrupted, tmp_path
):
    """SIGKILL while ``iter_6.pth`` is half written: no file of that name
    appears and ``last_checkpoint`` still names ``iter_3.pth``. Resumed
    from there, killed again after iteration 7 and resumed from
    ``iter_6.pth``, the run ends where the uninterrupted one does."""
    work_dir = str(tmp_path)
    name = f'iter_{2 * INTERVAL}.pth'
    # The checkpoint is written to this file first; as a FIFO it lets the
    # test stop the writer partway through and kill it there.
    partial = osp.join(work_dir, f'.{name}.part')
    os.mkfifo(partial)
    written = _kill_while_writing(_launch(config, work_dir), partial)
    # What a kill leaves of a regular file: the bytes written so far.
    os.remove(partial)
    with open(partial, 'wb') as f:
        f.write(written)
    assert not osp.exists(osp.join(work_dir, name))
    assert _last_checkpoint(work_dir) == f'iter_{INTERVAL}.pth'

    process = _launch(config, work_dir, '--resume')
    _kill_after_iteration(process, 2 * INTERVAL + 1)
    assert f'resumed epoch: 0, iter: {INTERVAL}' in _read(process.log_path)
    assert not osp.exists(partial)  # replaced by the complete iter_6.pth

    resume_point = _resume_point(work_dir)  # 6 unless the kill came late
    output = _finish(_launch(config, work_dir, '--resume'))
    assert f'resumed epoch: 0, iter: {resume_point}' in output
    _assert_identical_checkpoints(
        uninterrupted, osp.join(work_dir, FINAL_CHECKPOINT)
    )


def test_ddp_kill_then_resume_is_bit_exact_and_other_world_sizes_warn(
    config, uninterrupted_ddp, tmp_path
):
    work_dir = str(tmp_path / 'ddp')
    _kill_after_iteration(_launch(config, work_dir, nproc=2), INTERVAL + 1)
    resume_point = _resume_point(work_dir)  # 3 unless the kill came late
    output = _finish(_launch(config, work_dir, '--resume', nproc=2))
    assert f'resumed epoch: 0, iter: {resume_point}' in output
    _assert_identical_checkpoints(
        uninterrupted_ddp, osp.join(work_dir, FINAL_CHECKPOINT)
    )
    # Rank 0 saved the states of both ranks.
    checkpoint = osp.join(work_dir, f'iter_{2 * INTERVAL}.pth')
    saved = safe_torch_load(checkpoint)['rng_states']
    assert saved['world_size'] == len(saved['ranks']) == 2

    # One process resuming the 2-process checkpoint: warned, then trains on.
    single = str(tmp_path / 'single')
    output = _finish(_launch(config, single, '--resume', checkpoint))
    assert 'saved with world size 2, this run has 1' in output
    assert osp.isfile(osp.join(single, FINAL_CHECKPOINT))


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------
def _launch(config, work_dir, *args, nproc=1):
    """Starts ``tools/train.py`` (under ``torch.distributed.run`` for
    ``nproc > 1``); output goes to
    ``<work_dir>.<n>.log``."""
    os.makedirs(work_dir, exist_ok=True)
    train = ['tools/train.py', config, '--work-dir', work_dir, *args]
    if nproc > 1:
        command = [
            sys.executable,
            '-m',
            'torch.distributed.run',
            f'--nproc_per_node={nproc}',
            f'--master_port={_free_port()}',
            *train,
            '--launcher',
            'pytorch',
        ]
    else:
        command = [sys.executable, *train]
    python_path = os.environ.get('PYTHONPATH')
    env = dict(
        os.environ,
        PYTHONPATH=REPO + (os.pathsep + python_path if python_path else ''),
        # As torch.distributed.run sets for its workers: on a shared CPU
        # more threads only contend.
        OMP_NUM_THREADS='1',
    )
    log = open(f'{work_dir}.{next(_RUNS)}.log', 'w')
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log.name
    log.close()
    return process


def _finish(process) -> str:
    """Waits for a run; returns its output, which the failure shows."""
    try:
        returncode = process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(process)
        returncode = 'timeout'
    output = _read(process.log_path)
    assert returncode == 0, f'{returncode}:\n{output[-5000:]}'
    return output


def _kill_after_iteration(process, iteration: int) -> None:
    """SIGKILLs the run (every process of it) once its log shows
    ``iteration``."""
    pattern = re.compile(r'Iter\(train\) \[\s*(\d+)/')
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        logged = pattern.findall(_read(process.log_path))
        if any(int(i) >= iteration for i in logged):
            _kill(process)
            return
        assert process.poll() is None, _read(process.log_path)[-5000:]
        time.sleep(0.02)
    _kill(process)
    raise AssertionError(f'iteration {iteration} was not logged in time')


def _kill_while_writing(process, fifo: str, chunk: int = 1 << 16) -> bytes:
    """Reads ``chunk`` bytes of the checkpoint the run writes into
    ``fifo``, then SIGKILLs it mid-write; returns the bytes read."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    received = b''
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while len(received) < chunk:
            try:
                data = os.read(fd, chunk - len(received))
            except BlockingIOError:  # writer open, nothing written yet
                data = b''
            received += data
            if not data:
                assert process.poll() is None, _read(process.log_path)[-5000:]
                assert time.monotonic() < deadline, 'no checkpoint write'
                time.sleep(0.01)
        _kill(process)
    finally:
        os.close(fd)
    return received


def _kill(process) -> None:
    """SIGKILLs the run at once: the launcher and every process under it
    (``torch.distributed.run`` starts its workers in sessions of their
    own, so they are not in the launcher's process group)."""
    for pid in [process.pid, *_descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _descendants(pid: int) -> list:
    children = {}
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat') as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat.rsplit(')', 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


def _resume_point(work_dir: str) -> int:
    """The iteration ``--resume`` goes on from; fails if the killed run
    had no checkpoint yet or had finished (nothing would be resumed)."""
    iteration = int(
        re.fullmatch(r'iter_(\d+)\.pth', _last_checkpoint(work_dir))[1]
    )
    assert 0 < iteration < MAX_ITERS, f'killed too late: {iteration}'
    return iteration


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _assert_identical_checkpoints(expected_path: str, actual_path: str):
    expected = safe_torch_load(expected_path)
    actual = safe_torch_load(actual_path)
    differences = []
    for key in COMPARED:
        assert key in expected, f'{expected_path} has no {key!r}'
        _collect_differences(expected[key], actual.get(key), key, differences)
    assert not differences, (
        f'{len(differences)} entries differ from the uninterrupted run, '
        'e.g.\n' + '\n'.join(differences[:20])
    )


def _collect_differences(expected, actual, where: str, differences: list):
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor) or (
            expected.dtype,
            expected.shape,
        ) != (actual.dtype, actual.shape):
            differences.append(f'{where}: {actual!r:.60} instead of a tensor')
        elif not torch.equal(expected, actual):
            error = (expected.double() - actual.double()).abs().max()
            differences.append(f'{where}: max abs difference {error:.3g}')
    elif isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            differences.append(f'{where}: other keys')
            return
        for key, value in expected.items():
            _collect_differences(
                value, actual[key], f'{where}.{key}', differences
            )
    elif isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)) or len(expected) != len(
            actual
        ):
            differences.append(f'{where}: other length')
            return
        for index, (a, b) in enumerate(zip(expected, actual)):
            _collect_differences(a, b, f'{where}[{index}]', differences)
    elif expected != actual:
        differences.append(f'{where}: {actual!r:.60} != {expected!r:.60}')

"""slak_mm.apis.config and slak_mm.apis.run: what tools/train.py and
tools/test.py do with the config, and the one place a process group is
created."""

import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config

from slak_mm.apis import (
    enable_auto_scale_lr,
    launcher_process_group,
    load_config,
    set_resume,
    set_test_output,
    trigger_visualization_hook,
)

from .helpers import REPO

CLS_CONFIG = osp.join(REPO, 'configs', 'classification', 'slak_t_in1k.py')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def single_rank_env(monkeypatch):
    """The environment torchrun gives one rank of a one-process job."""
    for key, value in dict(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()),
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
    ).items():
        monkeypatch.setenv(key, value)
    assert not dist.is_initialized()
    yield
    if dist.is_initialized():  # a failed test must not leak its group
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_load_config_creates_no_process_group(single_rank_env, tmp_path):
    cfg = load_config(CLS_CONFIG, None, str(tmp_path), 'pytorch')
    assert not dist.is_initialized()
    # Without CUDA the config is switched to gloo and CPU DDP.
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.launcher == 'pytorch'


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_launcher_process_group_creates_and_closes_gloo(
    single_rank_env, tmp_path
):
    cfg = load_config(CLS_CONFIG, None, str(tmp_path), 'pytorch')
    with launcher_process_group(cfg):
        assert dist.is_initialized()
        assert dist.get_backend() == 'gloo'
        assert dist.get_world_size() == 1
    assert not dist.is_initialized()


def test_no_launcher_no_process_group(single_rank_env, tmp_path):
    cfg = load_config(CLS_CONFIG, None, str(tmp_path), 'none')
    with launcher_process_group(cfg):
        assert not dist.is_initialized()
    assert not dist.is_initialized()


def test_resume_and_auto_scale_lr():
    cfg = Config(dict(load_from='x.pth', resume=False))
    set_resume(cfg, None)
    assert (cfg.resume, cfg.load_from) == (False, 'x.pth')
    set_resume(cfg, 'auto')
    assert (cfg.resume, cfg.load_from) == (True, None)
    set_resume(cfg, 'w/iter_8.pth')
    assert (cfg.resume, cfg.load_from) == (True, 'w/iter_8.pth')
    with pytest.raises(KeyError, match='cfg.py has no auto_scale_lr'):
        enable_auto_scale_lr(cfg, 'cfg.py')
    cfg.auto_scale_lr = dict(base_batch_size=16, enable=False)
    enable_auto_scale_lr(cfg, 'cfg.py')
    assert cfg.auto_scale_lr.enable


@pytest.mark.parametrize(
    'scope, where',
    [
        ('mmseg', ('visualizer', 'save_dir')),
        ('mmdet', ('default_hooks', 'visualization', 'test_out_dir')),
        ('mmpretrain', ('default_hooks', 'visualization', 'out_dir')),
    ],
)
def test_visualization_hook_and_test_output(scope, where):
    cfg = Config(
        dict(
            default_scope=scope,
            default_hooks=dict(visualization=dict(interval=50)),
            visualizer=dict(),
            test_evaluator=dict(type='IoUMetric'),
        )
    )
    trigger_visualization_hook(cfg, 'vis')
    value = cfg
    for key in where:
        value = value[key]
    assert value == 'vis'
    assert cfg.default_hooks.visualization.interval == 1
    if scope == 'mmseg':
        set_test_output(cfg, 'label_maps')
        assert cfg.test_evaluator.output_dir == 'label_maps'
    else:
        set_test_output(cfg, 'out.pkl')
        with pytest.raises(ValueError, match='must be a .pkl file'):
            set_test_output(cfg, 'out.json')


def test_show_dir_needs_the_visualization_hook():
    cfg = Config(dict(default_scope='mmseg', default_hooks=dict()))
    with pytest.raises(KeyError, match='default_hooks.visualization'):
        trigger_visualization_hook(cfg, 'vis')

"""Config handling shared by tools/train.py and tools/test.py."""

import argparse
import logging
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def load_config(
    path: str,
    cfg_options: Optional[dict] = None,
    work_dir: Optional[str] = None,
    launcher: str = 'none',
) -> Config:
    """Reads a config, applies ``--cfg-options``, work dir and launcher.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Overrides in ``key=value`` form.
        work_dir (str, optional): Work directory; by default
            ``./work_dirs/<config name>``.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(
            f'{path}: default_scope must be one of {SCOPES}, got {scope!r}'
        )
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(path))[0]
        )
    if launcher != 'none':
        use_gloo_without_cuda(cfg)
    return cfg


def use_gloo_without_cuda(cfg: Config) -> None:
    """Runs multi-process jobs on the CPU with the gloo backend.

    NCCL cannot run on CPUs, and mmengine's ``init_dist`` calls
    ``torch.cuda.set_device``, so without CUDA the process group of a
    ``pytorch`` launch is created here (mmengine then reuses it). The switch
    is logged, not silent.
    """
    if torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        print_log(
            'No CUDA device: using the gloo backend instead of nccl',
            logger='current',
        )
        dist_cfg['backend'] = 'gloo'
    # DDP takes no device ids for CPU modules.
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False),
    )
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    if cfg.launcher == 'pytorch' and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=dist_cfg['backend'])


def enable_amp(cfg: Config) -> None:
    """Turns the config's ``OptimWrapper`` into a mixed-precision one.

    With CUDA: mmengine's ``AmpOptimWrapper`` (fp16 autocast, dynamic loss
    scale). Without: :class:`~slak_mm.engine.CPUAmpOptimWrapper` (bf16 CPU
    autocast, no loss scale needed), since ``AmpOptimWrapper`` refuses to
    build without an accelerator.

    Raises:
        ValueError: If the config uses another optimizer wrapper type.
    """
    optim_wrapper = cfg.optim_wrapper
    current = optim_wrapper.get('type', 'OptimWrapper')
    if torch.cuda.is_available():
        target = 'AmpOptimWrapper'
    else:
        target = 'CPUAmpOptimWrapper'
    if current == target:
        print_log(
            f'AMP is already enabled in the config ({target})', 'current'
        )
        return
    if current != 'OptimWrapper':
        raise ValueError(
            f'--amp replaces OptimWrapper by {target}, but the config uses '
            f'{current}'
        )
    optim_wrapper.type = target
    if target == 'AmpOptimWrapper':
        optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        print_log(
            'No CUDA device: --amp trains under bf16 CPU autocast '
            '(CPUAmpOptimWrapper)',
            logger='current',
        )


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--cfg-options``, ``--launcher`` and ``--local-rank``."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses the command line and exports LOCAL_RANK for launchers that
    pass it as an argument."""
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_runner(cfg: Config) -> Runner:
    """The config's own runner type if it names one, else
    :class:`StrictLoadingRunner` (mmengine's Runner with strict, checked
    checkpoint loading for ``load_from``, ``--resume`` and testing)."""
    from .runner import StrictLoadingRunner

    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
        if not isinstance(runner, StrictLoadingRunner):
            print_log(
                f'runner_type {cfg.runner_type!r} loads checkpoints '
                'non-strictly (StrictLoadingRunner checks them)',
                logger='current',
                level=logging.WARNING,
            )
        return runner
    return StrictLoadingRunner.from_cfg(cfg)


def close_process_group() -> None:
    """Destroys the default process group before the interpreter exits.

    Left to interpreter shutdown, gloo's threads can be torn down while
    still joinable, which aborts the process after a finished run.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

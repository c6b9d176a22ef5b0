"""What the command line of ``tools/train.py`` and ``tools/test.py`` does
to the config, before a runner exists.

:func:`load_config` reads it (``--cfg-options``, ``--work-dir``,
``--launcher``); the others apply one option each (``--amp``, ``--resume``,
``--auto-scale-lr``, ``--show-dir``, ``--out``). Nothing here builds a
runner or creates a process group (see :mod:`.run`).
"""

import inspect
import logging
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import TestLoop

from ..models.backends.torch_private import onednn_supports

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')

#: The hook that keeps predictions fp32 under autocast (see
#: :class:`~slak_mm.engine.hooks.FP32OutputsHook`).
FP32_OUTPUTS_HOOK = 'FP32OutputsHook'


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

    Only the config changes: no process group is created here (see
    :func:`launcher_process_group`).
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
    """Configures multi-process jobs to run on the CPU with gloo.

    NCCL cannot run on CPUs, so without CUDA the config's ``nccl`` backend
    becomes ``gloo`` (logged, not silent) and DDP gets no device ids.
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


def enable_test_amp(cfg: Config) -> None:
    """Makes the test loop run each step under mixed precision (``--amp``).

    Sets ``test_cfg.fp16``: mmengine's test loops then wrap every
    ``test_step`` (preprocessing, forward, postprocessing) in mmengine's
    ``autocast``, which is fp16 on CUDA and bf16 CPU autocast on a machine
    without CUDA. Parameters stay fp32. :func:`add_fp32_outputs_hook`
    then hands the evaluator fp32 predictions (and detectors on the CPU
    fp32 inputs for their mmcv ops).

    Raises:
        ValueError: If the config has no ``test_cfg`` dict, or its loop
            type takes no ``fp16`` argument (``--amp`` would do nothing).
        KeyError: If ``test_cfg.type`` is no registered loop.
    """
    test_cfg = cfg.get('test_cfg')
    if not isinstance(test_cfg, dict):
        raise ValueError(
            '--amp sets test_cfg.fp16, but the config has no test_cfg dict '
            f'(got {test_cfg!r})'
        )
    loop_type = test_cfg.get('type', TestLoop)
    if isinstance(loop_type, str):
        scope = test_cfg.get('_scope_', cfg.get('default_scope'))
        with LOOPS.switch_scope_and_registry(scope) as registry:
            loop_cls = registry.get(loop_type)
        if loop_cls is None:
            raise KeyError(
                f'test_cfg.type {loop_type!r} is not a registered loop '
                f'(scope {scope!r})'
            )
    else:
        loop_cls = loop_type
    if 'fp16' not in inspect.signature(loop_cls).parameters:
        raise ValueError(
            f'--amp sets test_cfg.fp16, but the test loop '
            f'{loop_cls.__name__} takes no fp16 argument'
        )
    if test_cfg.get('fp16'):
        print_log('AMP is already enabled in test_cfg (fp16=True)', 'current')
    test_cfg['fp16'] = True
    if torch.cuda.is_available():
        print_log('--amp tests under fp16 CUDA autocast', logger='current')
        return
    print_log(
        'No CUDA device: --amp tests under bf16 CPU autocast',
        logger='current',
    )
    if not onednn_supports(torch.bfloat16):
        print_log(
            'This CPU has no bf16 support in oneDNN (no AVX512-BF16/AMX): '
            'bf16 autocast runs, but slower than fp32',
            logger='current',
            level=logging.WARNING,
        )


def add_fp32_outputs_hook(cfg: Config) -> bool:
    """Adds :class:`~slak_mm.engine.hooks.FP32OutputsHook` to
    ``custom_hooks`` when the test loop runs under autocast
    (``test_cfg.fp16``, e.g. from :func:`enable_test_amp`).

    The evaluator (metrics, ``--out`` dumps) then gets fp32 predictions,
    and an mmdet detector on the CPU fp32 inputs for RoIAlign and NMS.

    Returns:
        bool: Whether the config has the hook now.
    """
    test_cfg = cfg.get('test_cfg')
    if not (isinstance(test_cfg, dict) and test_cfg.get('fp16')):
        return False
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(_hook_type(hook) == FP32_OUTPUTS_HOOK for hook in hooks):
        hooks.append(dict(type=FP32_OUTPUTS_HOOK))
    cfg.custom_hooks = hooks
    return True


def _hook_type(hook) -> Optional[str]:
    if isinstance(hook, dict):
        kind = hook.get('type')
        if isinstance(kind, str):
            return kind
        return getattr(kind, '__name__', None)
    return type(hook).__name__


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """Applies ``--resume``: ``'auto'`` resumes from the latest checkpoint
    of the work dir, a path from that file, None does not resume."""
    if resume is None:
        return
    cfg.resume = True
    cfg.load_from = None if resume == 'auto' else resume


def enable_auto_scale_lr(cfg: Config, config_path: str) -> None:
    """Applies ``--auto-scale-lr``: the runner scales the lr by the actual
    batch size over ``auto_scale_lr.base_batch_size``.

    Raises:
        KeyError: If the config has no ``auto_scale_lr.base_batch_size``.
    """
    if 'auto_scale_lr' not in cfg or 'base_batch_size' not in (
        cfg.auto_scale_lr
    ):
        raise KeyError(
            f'{config_path} has no auto_scale_lr.base_batch_size to scale from'
        )
    cfg.auto_scale_lr.enable = True


def trigger_visualization_hook(cfg: Config, show_dir: str) -> None:
    """Saves painted predictions to ``show_dir`` with the toolkit's hook
    (``--show-dir``), one per test image.

    Raises:
        KeyError: If the config has no ``default_hooks.visualization``.
    """
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError(
            '--show-dir needs default_hooks.visualization in the config'
        )
    hook['interval'] = 1  # paint every test image, not every 50th
    if cfg.default_scope == 'mmseg':
        hook['draw'] = True
        cfg.visualizer['save_dir'] = show_dir
    elif cfg.default_scope == 'mmdet':
        hook['draw'] = True
        hook['test_out_dir'] = show_dir
    else:
        hook['enable'] = True
        hook['out_dir'] = show_dir


def set_test_output(cfg: Config, out: str) -> None:
    """Prepares ``--out`` before the runner is built.

    mmseg writes its predicted label maps to the directory ``out`` through
    the evaluator's ``output_dir``; mmdet and mmpretrain dump raw
    predictions to a ``.pkl`` file (see :func:`add_dump_metric`).

    Raises:
        ValueError: For mmdet/mmpretrain, if ``out`` is no .pkl file.
    """
    if cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    elif not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file, got {out}')

"""What ``tools/train.py`` and ``tools/test.py`` do, as library functions.

The scripts parse their arguments and call these: read the config and
apply the command line (:func:`load_config`, :func:`enable_amp`,
:func:`enable_test_amp`, :func:`set_resume`, :func:`enable_auto_scale_lr`,
:func:`trigger_visualization_hook`, :func:`set_test_output`), build the
runner (:func:`build_runner`, :func:`add_dump_metric`, and under
``--amp`` :func:`keep_detection_ops_fp32`, :func:`keep_predictions_fp32`)
and run it inside
:func:`launcher_process_group`, the one place where a process group is
created by this package.
"""

import argparse
import contextlib
import inspect
import logging
import os
import os.path as osp
from typing import Any, Iterator, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import LOOPS, RUNNERS
from mmengine.runner import Runner, TestLoop
from mmengine.structures import BaseDataElement

from ..models.backends.ops import onednn_supports

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


@contextlib.contextmanager
def launcher_process_group(cfg: Config) -> Iterator[None]:
    """The process group of a multi-process run, closed at the end.

    On entry, for ``launcher='pytorch'`` without CUDA, creates the default
    process group with the config's (gloo) backend: mmengine's
    ``init_dist`` calls ``torch.cuda.set_device`` and fails without CUDA,
    and it reuses a group that exists already. In every other case
    (``launcher='none'``, or CUDA present) nothing is created here; mmengine's
    Runner creates what it needs.

    On a normal exit, destroys the default process group if one exists
    (see :func:`close_process_group`). After an exception it is left to
    the interpreter: a barrier could wait forever for a rank that failed.

    Args:
        cfg (Config): A config from :func:`load_config`.
    """
    launcher = cfg.get('launcher', 'none')
    if (
        launcher == 'pytorch'
        and not torch.cuda.is_available()
        and not torch.distributed.is_initialized()
    ):
        backend = cfg.env_cfg.dist_cfg['backend']
        torch.distributed.init_process_group(backend=backend)
    yield
    close_process_group()


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
    without CUDA. Parameters stay fp32. After :func:`build_runner`,
    :func:`keep_predictions_fp32` hands the evaluator fp32 predictions,
    and detectors on the CPU need :func:`keep_detection_ops_fp32`.

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


def _to_fp32(value: Any) -> Any:
    """``value`` with every bf16/fp16 tensor in it cast to fp32: nested in
    tuples, lists, dicts and the data fields of mmengine data elements
    (changed in place); other values unchanged."""
    if isinstance(value, torch.Tensor):
        reduced = value.dtype in (torch.bfloat16, torch.float16)
        return value.float() if reduced else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_fp32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    if isinstance(value, BaseDataElement):
        for key, field in list(value.items()):
            setattr(value, key, _to_fp32(field))
    return value


def _under_autocast(cfg: Config) -> bool:
    test_cfg = cfg.get('test_cfg')
    return isinstance(test_cfg, dict) and bool(test_cfg.get('fp16'))


def keep_predictions_fp32(runner: Runner) -> bool:
    """Hands the evaluator (metrics, ``--out`` dumps) fp32 predictions
    when the test loop runs under autocast (``test_cfg.fp16``).

    Under autocast some predictions come out in the autocast dtype
    (mmpretrain's ``pred_score``, for one); a bf16 tensor in a ``--out``
    pickle cannot even become a numpy array. ``--amp`` changes how the
    model computes, not what it returns, so ``runner.model.test_step``'s
    bf16/fp16 tensors are cast to fp32 (labels, masks and fp64 values stay
    as they are). Call it after :func:`build_runner`.

    Returns:
        bool: Whether ``test_step`` was wrapped (False without autocast).
    """
    if not _under_autocast(runner.cfg):
        return False
    model = runner.model
    test_step = model.test_step

    def test_step_fp32(data):
        return _to_fp32(test_step(data))

    model.test_step = test_step_fp32
    return True


def keep_detection_ops_fp32(runner: Runner) -> int:
    """Gives an mmdet detector's RoIAlign and post-processing fp32 inputs
    under bf16 CPU autocast (``tools/test.py --amp`` without CUDA).

    Call it after :func:`build_runner`. It does nothing unless the config
    tests under autocast (``test_cfg.fp16``, see :func:`enable_test_amp`),
    with CUDA (mmcv's CUDA kernels take fp16) or for another toolkit.

    mmcv's CPU kernels of RoIAlign and NMS take only fp32/fp64 tensors
    (RoIAlign: '"ROIAlign_forward" not implemented for BFloat16', NMS:
    "expected scalar type Float but found BFloat16"). So the RoI feature
    extractors get their features cast to fp32 (forward pre-hook), and the
    dense, bbox and mask heads return fp32 outputs (forward hook) for their
    ``predict_by_feat`` (box decoding, NMS, mask pasting). The backbone,
    the neck and the heads' own convs and linear layers still run in bf16.
    Other fp32-only mmcv ops (e.g. deformable convs, not used by the
    shipped configs) are not covered and stop with mmcv's dtype error.

    Args:
        runner (Runner): The built runner; hooks go on ``runner.model``.

    Returns:
        int: The number of modules given a hook.
    """
    cfg = runner.cfg
    if (
        not _under_autocast(cfg)
        or cfg.get('default_scope') != 'mmdet'
        or torch.cuda.is_available()
    ):
        return 0
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    from mmdet.models.roi_heads.roi_extractors import BaseRoIExtractor

    hooked = 0
    for module in runner.model.modules():
        if isinstance(module, BaseRoIExtractor):
            module.register_forward_pre_hook(lambda _, args: _to_fp32(args))
            hooked += 1
        elif isinstance(module, (BaseDenseHead, BBoxHead, FCNMaskHead)):
            module.register_forward_hook(
                lambda _, args, output: _to_fp32(output)
            )
            hooked += 1
    if hooked:
        print_log(
            f'bf16 CPU autocast: {hooked} RoI extractors and heads hand '
            'fp32 tensors to RoIAlign and post-processing (NMS), whose '
            'mmcv CPU kernels take no bf16',
            logger='current',
        )
    return hooked


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
    from ..engine.runner import StrictLoadingRunner

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


def add_dump_metric(runner: Runner, out: str) -> None:
    """Appends the metric that dumps mmdet/mmpretrain test predictions to
    ``out`` (``.pkl``); mmseg needs none (see :func:`set_test_output`)."""
    scope = runner.cfg.default_scope
    if scope == 'mmseg':
        return
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults as DumpMetric
    else:
        from mmengine.evaluator import DumpResults as DumpMetric
    runner.test_evaluator.metrics.append(DumpMetric(out_file_path=out))


def make_runner_parser(
    description: str, *positionals: str
) -> argparse.ArgumentParser:
    """The arguments ``tools/train.py`` and ``tools/test.py`` share.

    Args:
        description (str): The tool's description.
        positionals (str): ``'config: help'`` strings, in order.

    Returns:
        ArgumentParser: With the positionals, ``--work-dir`` and
        :func:`add_runner_arguments`.
    """
    parser = argparse.ArgumentParser(description=description)
    for positional in positionals:
        name, _, text = positional.partition(':')
        parser.add_argument(name, help=text.strip())
    parser.add_argument('--work-dir', help='the dir to save logs and outputs')
    add_runner_arguments(parser)
    return parser

"""Running ``tools/train.py`` and ``tools/test.py``: the runner, what
is added to it, and the process group's lifetime.

:func:`launcher_process_group` is the one place where this package creates
a process group.
"""

import contextlib
import logging
from typing import Iterator

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..engine.runner import StrictLoadingRunner


def build_runner(cfg: Config) -> Runner:
    """The config's own runner type if it names one, else
    :class:`StrictLoadingRunner` (mmengine's Runner with strict, checked
    checkpoint loading for ``load_from``, ``--resume`` and testing)."""
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


def close_process_group() -> None:
    """Destroys the default process group before the interpreter exits.

    Left to interpreter shutdown, gloo's threads can be torn down while
    still joinable, which aborts the process after a finished run.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

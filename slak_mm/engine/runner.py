"""The runner that ``tools/train.py`` and ``tools/test.py`` build.

Strictness itself needs no runner: importing :mod:`slak_mm` makes mmengine's
``load_state_dict`` check every load into a SLaK model
(:func:`~slak_mm.utils.checkpoint.make_mmengine_loading_strict`), so the
toolkits' own scripts and runners refuse a checkpoint that does not fit.
:class:`StrictLoadingRunner` adds two checks that must run before the
``after_load_checkpoint`` hooks see the file, so that no hook acts on (or
logs about) a checkpoint that is then refused: the fit check, and for
``--resume`` that the file holds the runner state.
"""

from typing import Callable, Union

from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (
    _load_checkpoint,
    _load_checkpoint_to_model,
)

from ..utils.checkpoint import check_checkpoint_fits, extract_state_dict


def check_resumable(checkpoint: dict, filename: str) -> None:
    """Raises unless the checkpoint holds the runner state ``resume`` needs.

    Raises:
        ValueError: Names the file and the entries it lacks.
    """
    meta = checkpoint.get('meta')
    lacking = []
    if not isinstance(meta, dict):
        lacking.append('meta')
    else:
        lacking += [f'meta.{k}' for k in ('epoch', 'iter') if k not in meta]
    if 'message_hub' not in checkpoint:
        lacking.append('message_hub')
    if lacking:
        raise ValueError(
            f'{filename} cannot be resumed from: it lacks the training state '
            f'{lacking} that the runner saves (it holds '
            f'{sorted(map(str, checkpoint))[:10]}). To start training from '
            f'its weights, use --cfg-options load_from={filename} instead of '
            '--resume'
        )


def check_checkpoint_fits_runner(runner, checkpoint, filename: str) -> None:
    """Raises unless ``checkpoint`` fits ``runner.model``.

    For ``after_load_checkpoint`` hooks that act on the checkpoint: the
    toolkits' runners call them before loading the weights, and a hook
    should not act on (or fail its own way on) a file that is then refused.

    Raises:
        CheckpointMismatchError: See
            :func:`~slak_mm.utils.checkpoint.check_checkpoint_fits`.
    """
    model = runner.model
    model = model.module if is_model_wrapper(model) else model
    check_checkpoint_fits(
        extract_state_dict(checkpoint, filename), model, filename
    )


@RUNNERS.register_module()
class StrictLoadingRunner(Runner):
    """mmengine's Runner, refusing a checkpoint before any hook sees it."""

    _resuming = False

    def resume(
        self,
        filename: str,
        resume_optimizer: bool = True,
        resume_param_scheduler: bool = True,
        map_location: Union[str, Callable] = 'default',
    ) -> None:
        self._resuming = True
        try:
            super().resume(
                filename,
                resume_optimizer=resume_optimizer,
                resume_param_scheduler=resume_param_scheduler,
                map_location=map_location,
            )
        finally:
            self._resuming = False

    def load_checkpoint(
        self,
        filename: str,
        map_location: Union[str, Callable] = 'cpu',
        strict: bool = False,
        revise_keys: list = [(r'^module\.', '')],  # noqa: B006 (mmengine's)
    ) -> dict:
        """As mmengine's, with the checks first.

        Raises:
            CheckpointMismatchError: If a tensor of the model is missing from
                the checkpoint or has another shape.
            TypeError: If the file holds no dict or its weights are no dict.
            ValueError: When resuming, if the file lacks the runner state.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        check_checkpoint_fits_runner(self, checkpoint, filename)
        if self._resuming:
            check_resumable(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        # Checked again inside (hooks such as EMAHook may swap weights).
        model = self.model
        model = model.module if is_model_wrapper(model) else model
        _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys
        )
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

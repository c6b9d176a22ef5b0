"""The mmengine hook that trains a model sparse with SLaK's recipe.

The algorithm is :class:`slak_mm.sparse.DynamicSparsity` (plain torch);
the hook builds it, calls it at runner events, saves and loads its state,
and logs.
"""

import logging
import math
from typing import Optional

from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from slak_mm.sparse.checks import (
    CHECKPOINT_KEY,
    resume_warning,
    state_from_checkpoint,
)
from slak_mm.sparse.controller import DynamicSparsity
from slak_mm.sparse.masking import optimizer_holding, resolve_module
from slak_mm.sparse.settings import SparsitySettings
from slak_mm.sparse.snip import sample_batch, snip_loss, snip_scores
from slak_mm.utils.checkpoint import last_read_checkpoint

from ..optim_wrapper import use_plain_param_groups
from ..runner import check_checkpoint_fits_runner


@HOOKS.register_module()
class SparseTrainingHook(Hook):
    """Trains the masked weights of a model sparse, with mask updates.

    Builds a :class:`~slak_mm.sparse.DynamicSparsity` over
    ``model.<module_path>`` in ``before_train`` (after ``load_from`` /
    ``init_cfg`` weights are in), or restores it from the checkpoint entry
    ``'sparse_training'`` on resume, and calls its ``step`` from an
    ``optimizer.step`` post-hook, so iterations that only accumulate
    gradients, or whose AMP step was skipped for inf gradients, do not
    count. ``init='snip'`` scores one batch drawn from the training set on
    a scratch copy (:func:`~slak_mm.sparse.snip.snip_loss`). An
    ``EMAHook``'s averaged copy is masked after each EMA update; saved
    weights are exactly zero at masked positions. The controller's
    settings and state read from ``hook.controller`` once built
    (``hook.controller.mask_state``, ``hook.controller.num_updates``, ...;
    a resume may replace ``sparsity`` and ``init``); ``hook.settings`` holds
    the arguments as configured.

    Logged through the message hub every iteration: ``sparse/density``,
    ``sparse/prune_rate`` (the rate the next update uses) and
    ``sparse/density_<group>`` (``stem``, ``stage<i>``, else the top-level
    module).

    Args:
        module_path (str, optional): Module to sparsify. Defaults to
            ``'backbone'``; None masks the whole model (head included).
        seed (int, optional): Seed of the random draws; None uses the
            runner's seed.
        total_steps (int, optional): ``T`` of the prune-rate cosine; None
            for ``ceil(max_iters / accumulative_counts)``.
        **kwargs: The other arguments of :class:`DynamicSparsity`, with its
            defaults: ``sparsity`` (0.4), ``init`` (``'snip'``), ``growth``
            (``'random'``), ``prune_rate`` (0.3; the release's T uses 0.5),
            ``prune_rate_floor``, ``update_interval`` (100; T uses 2000;
            None for static masks), ``stop_update_iter``,
            ``stop_update_epoch``, ``include`` / ``exclude`` (``fnmatch``
            patterns), ``erk_power`` and ``mask_all_optimizer_state``.
            Checked here, so a bad config fails before training.
    """

    # After EMAHook (NORMAL, 50): mask its fresh average, and see the EMA
    # weights it swaps into checkpoints. Before LoggerHook (BELOW_NORMAL,
    # 60), which logs this iteration's scalars, and CheckpointHook.
    priority = 55

    def __init__(
        self,
        module_path: Optional[str] = 'backbone',
        seed: Optional[int] = None,
        total_steps: Optional[int] = None,
        **kwargs,
    ) -> None:
        if module_path is not None and not isinstance(module_path, str):
            raise TypeError(
                'module_path must be a dotted attribute path string or '
                f'None, got {module_path!r}'
            )
        self.module_path = module_path
        # Checked now, so a bad config fails before training.
        self.settings = SparsitySettings(
            seed=seed, total_steps=total_steps, **kwargs
        )
        #: The DynamicSparsity, built in ``before_train``.
        self.controller: Optional[DynamicSparsity] = None
        self._resumed_state: Optional[dict] = None
        self._step_hook_handle = None

    @property
    def _name(self) -> str:
        return type(self).__name__

    def before_train(self, runner) -> None:
        """Builds (or restores) the controller and hooks the optimizer."""
        if runner.cfg.get('compile'):
            # compile=True traces the optimizer step in the first train
            # step, which follows; other constructors than ours hand it
            # ConfigDict param groups, which dynamo cannot trace.
            wrapper = runner.optim_wrapper
            wrappers = (
                wrapper.values()
                if isinstance(wrapper, OptimWrapperDict)
                else [wrapper]
            )
            for each in wrappers:
                use_plain_param_groups(each.optimizer)
        resumed = self._resumed_state is not None
        self.controller = controller = self._build_controller(runner)
        if len(controller.mask_state) == 0:
            self._log(
                'every selected layer is dense (init='
                f'{controller.init!r}), nothing is masked',
                logging.WARNING,
            )
            return
        note = controller.bind(self._find_optimizer(runner))
        if note:
            self._log(note, logging.WARNING)
        self._step_hook_handle = controller.register_step_hook()
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                ema_model = hook.ema_model.module
                controller.track_ema(
                    resolve_module(ema_model, self.module_path, 'module_path')
                )
        origin = 'restored from the checkpoint' if resumed else 'built'
        self._log(
            f'{len(controller.mask_state)} masked layers of '
            f'{self.module_path or "the model"} ({origin}), '
            f'{controller.describe()}'
        )

    def before_train_iter(self, runner, batch_idx: int, data_batch=None):
        """Tells the controller where training is (for the stop checks)."""
        if self.controller is not None:
            self.controller.iteration = runner.iter
            self.controller.epoch = runner.epoch

    def after_train_iter(
        self, runner, batch_idx: int, data_batch=None, outputs=None
    ) -> None:
        """Masks the EMA copy and logs density and prune rate."""
        controller = self.controller
        if controller is None or len(controller.mask_state) == 0:
            return
        controller.mask_ema()
        scalars = dict(
            density=controller.density,
            prune_rate=controller.current_prune_rate,
            **{
                f'density_{group}': density
                for group, density in controller.group_densities.items()
            },
        )
        for key, value in scalars.items():
            runner.message_hub.update_scalar(f'train/sparse/{key}', value)

    def after_train(self, runner) -> None:
        if self._step_hook_handle is not None:
            self._step_hook_handle.remove()
            self._step_hook_handle = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Saves masks and counters; masks the saved weights."""
        if self.controller is None:
            return
        checkpoint[CHECKPOINT_KEY] = dict(
            self.controller.state_dict(), module_path=self.module_path or ''
        )
        # The weights are masked after every step already; this also
        # covers whatever another hook (EMAHook) swapped in.
        prefix = f'{self.module_path}.' if self.module_path else ''
        self.controller.mask_weights(checkpoint.get('state_dict', {}), prefix)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keeps the saved masks and counters for ``before_train``."""
        # Before the checkpoint's masks are read: a file that does not fit
        # the model is refused with the fit report on every runner.
        check_checkpoint_fits_runner(
            runner, checkpoint, last_read_checkpoint()
        )
        if runner._resume:  # load_from: masks come from the loaded weights
            self._resumed_state = state_from_checkpoint(checkpoint, self._name)

    def _build_controller(self, runner) -> DynamicSparsity:
        """The controller over ``model.<module_path>``, with the masks of
        the resumed checkpoint or freshly drawn ones."""
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        settings = self.settings
        if settings.seed is None:
            settings = settings.replace(seed=runner.seed)
        if settings.total_steps is None:
            wrapper = runner.optim_wrapper
            accumulate = getattr(wrapper, '_accumulative_counts', 1)
            settings = settings.replace(
                total_steps=math.ceil(runner.max_iters / accumulate)
            )
        controller = DynamicSparsity(
            resolve_module(model, self.module_path, 'module_path'),
            **settings.to_dict(),
        )
        controller.name = self._name
        if self._resumed_state is not None:
            warning = resume_warning(
                self._resumed_state, self.settings.to_dict(),
                self.module_path,
                self._name,
            )  # fmt: skip
            if warning:
                self._log(warning, logging.WARNING)
            controller.load_state_dict(self._resumed_state)
            self._resumed_state = None
        elif controller.init == 'snip':
            names = list(controller.selected)
            controller.build_masks(self._snip_scores(runner, model, names))
        else:
            controller.build_masks()
        return controller

    def _snip_scores(self, runner, model, names) -> dict:
        """SNIP scores of ``names`` (relative to ``module_path``) on one
        batch drawn from the training set."""
        return snip_scores(
            model,
            lambda scratch: snip_loss(
                scratch, sample_batch(runner.train_dataloader), self._name
            ),
            names,
            self.module_path,
        )

    def _find_optimizer(self, runner):
        """The one optimizer holding the masked parameters."""
        wrapper = runner.optim_wrapper
        wrappers = (
            wrapper.values()
            if isinstance(wrapper, OptimWrapperDict)
            else [wrapper]
        )
        return optimizer_holding(
            [w.optimizer for w in wrappers],
            self.controller.mask_state.params.values(),
            self._name,
        )

    def _log(self, message: str, level: int = logging.INFO) -> None:
        print_log(f'{self._name}: {message}', logger='current', level=level)

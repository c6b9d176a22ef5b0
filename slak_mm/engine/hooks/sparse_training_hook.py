"""mmengine hooks that train a model sparse (SLaK's recipe) or keep a sparse
checkpoint sparse while fine-tuning.

The algorithm is :class:`slak_mm.sparse.DynamicSparsity` (plain torch);
these hooks build it, call it at runner events, save and load its state,
and log.
"""

import logging
import math
from collections.abc import Mapping
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from slak_mm.sparse.controller import (
    CHECKPOINT_KEY,
    DynamicSparsity,
    check_saved_state,
    check_settings,
    snip_scores,
)
from slak_mm.sparse.masking import MaskState, resolve_module

Patterns = Optional[Union[str, Sequence[str]]]


def _sample_batch(dataloader) -> dict:
    """One batch drawn from the loader's dataset and collated like the loader.

    Not ``next(iter(dataloader))``: a second iterator shares the loader's
    sampler, and closing it closes an ``InfiniteSampler``'s index generator,
    which then ends the training loop.
    """
    dataset = dataloader.dataset
    batch_size = min(dataloader.batch_size or 1, len(dataset))
    indices = torch.randperm(len(dataset))[:batch_size].tolist()
    return dataloader.collate_fn([dataset[i] for i in indices])


def _hard_labels(data) -> Optional[torch.Tensor]:
    """Class indices of a classification batch, one per sample, or None.

    Args:
        data (dict): The data preprocessor's output.

    Returns:
        Tensor | None: ``(N,)`` int64 labels when every data sample holds a
        single ``gt_label``; None for other tasks (segmentation, detection,
        multi-label).
    """
    samples = data.get('data_samples') if isinstance(data, dict) else None
    if not samples:
        return None
    labels = []
    for sample in samples:
        label = getattr(sample, 'gt_label', None)
        if not torch.is_tensor(label) or label.numel() != 1:
            return None
        labels.append(label.reshape(1))
    return torch.cat(labels).long()


@HOOKS.register_module()
class SparseTrainingHook(Hook):
    """Trains the masked weights of a model sparse, with mask updates.

    Builds a :class:`~slak_mm.sparse.DynamicSparsity` over
    ``model.<module_path>`` in ``before_train`` (after ``load_from`` /
    ``init_cfg`` weights are in), or restores it from the checkpoint on
    resume, and calls its ``step`` from an ``optimizer.step`` post-hook, so
    iterations that only accumulate gradients, or whose AMP step was
    skipped for inf gradients, do not count. Masks, counters and the
    update schedule are the controller's (see it for the algorithm); the
    hook adds SNIP on a training batch, the EMA copy of an ``EMAHook``,
    the checkpoint entry ``'sparse_training'`` and logging.

    SNIP scores one batch drawn from the training set on a scratch copy,
    as released: without batch augmentations (Mixup / CutMix), and with
    plain cross-entropy on the hard labels for classifiers (other models
    use their own loss). An ``EMAHook``'s averaged copy is masked after
    each EMA update (a kept position whose average was zero takes the
    weight's value, as in the release's ``ModelEma``); saved weights are
    exactly zero at masked positions.

    Logged through the message hub every iteration: ``sparse/density``
    (kept fraction over all selected weights), ``sparse/prune_rate`` (the
    rate the next update uses) and ``sparse/density_<group>`` (``stem``,
    ``stage<i>`` for SLaK / ConvNeXt names, else the top-level module).

    Args:
        sparsity (float): Pruned fraction, in [0, 1). Defaults to 0.4.
        init (str): ``'snip'``, ``'erk'``, ``'uniform'`` or
            ``'from_weights'``. Defaults to ``'snip'``.
        growth (str): ``'random'``, ``'gradient'`` or ``'momentum'``
            (``|exp_avg / (sqrt(exp_avg_sq) + 1e-8)|`` for Adam-family
            optimizers, SGD's ``|momentum_buffer|``). Defaults to
            ``'random'``.
        prune_rate (float): Initial fraction replaced per update. Defaults
            to 0.3 (release S/B; T uses 0.5).
        prune_rate_floor (float): Value it decays to. Defaults to 0.005.
        update_interval (int, optional): Optimizer steps between updates;
            None for static masks. Defaults to 100 (T uses 2000).
        stop_update_iter (int, optional): No updates from this iteration on.
        stop_update_epoch (int, optional): No updates from this epoch on.
        total_steps (int, optional): ``T`` of the cosine; None for
            ``ceil(max_iters / accumulative_counts)``.
        module_path (str, optional): Module to sparsify. Defaults to
            ``'backbone'``; None masks the whole model (head included).
        include (str | Sequence[str], optional): ``fnmatch`` patterns, e.g.
            ``['*large_kernel.vertical.*', '*large_kernel.horizontal.*']``
            (the release's ``--only-L``).
        exclude (str | Sequence[str], optional): Patterns to leave dense.
        erk_power (float): ERK power scale. Defaults to 1.
        seed (int, optional): Seed of the random draws; None uses the
            runner's seed.
        mask_all_optimizer_state (bool): Also zero Adam's moments at masked
            positions. Not in the release. Defaults to False.
    """

    # After EMAHook (NORMAL, 50): mask its fresh average, and see the EMA
    # weights it swaps into checkpoints. Before LoggerHook (BELOW_NORMAL,
    # 60), which logs this iteration's scalars, and CheckpointHook.
    priority = 55

    def __init__(
        self,
        sparsity: float = 0.4,
        init: str = 'snip',
        growth: str = 'random',
        prune_rate: float = 0.3,
        prune_rate_floor: float = 0.005,
        update_interval: Optional[int] = 100,
        stop_update_iter: Optional[int] = None,
        stop_update_epoch: Optional[int] = None,
        total_steps: Optional[int] = None,
        module_path: Optional[str] = 'backbone',
        include: Patterns = None,
        exclude: Patterns = None,
        erk_power: float = 1.0,
        seed: Optional[int] = None,
        mask_all_optimizer_state: bool = False,
    ) -> None:
        self.settings = dict(
            sparsity=sparsity,
            init=init,
            growth=growth,
            prune_rate=prune_rate,
            prune_rate_floor=prune_rate_floor,
            update_interval=update_interval,
            stop_update_iter=stop_update_iter,
            stop_update_epoch=stop_update_epoch,
            total_steps=total_steps,
            include=include,
            exclude=exclude,
            erk_power=erk_power,
            seed=seed,
            mask_all_optimizer_state=mask_all_optimizer_state,
        )
        check_settings(**self.settings)
        if module_path is not None and not isinstance(module_path, str):
            raise TypeError(
                'module_path must be a dotted attribute path string or '
                f'None, got {module_path!r}'
            )
        self.module_path = module_path
        self.controller: Optional[DynamicSparsity] = None
        self._resumed_state: Optional[dict] = None
        self._step_hook_handle = None

    def __getattr__(self, name: str):
        # Settings read as attributes (hook.sparsity, hook.seed, ...): the
        # controller's once built (a resume may replace sparsity / init).
        settings = self.__dict__.get('settings', {})
        if name in settings:
            controller = self.__dict__.get('controller')
            if controller is not None:
                return getattr(controller, name)
            return settings[name]
        raise AttributeError(
            f'{type(self).__name__!r} object has no attribute {name!r}'
        )

    @property
    def _name(self) -> str:
        return type(self).__name__

    @property
    def mask_state(self) -> Optional[MaskState]:
        return self.controller.mask_state if self.controller else None

    @property
    def optimizer_steps(self) -> int:
        return self.controller.optimizer_steps if self.controller else 0

    @property
    def num_updates(self) -> int:
        return self.controller.num_updates if self.controller else 0

    @property
    def density(self) -> float:
        return self.controller.density if self.controller else 1.0

    @property
    def current_prune_rate(self) -> float:
        return self.controller.current_prune_rate

    # ------------------------------------------------------------------
    # Hook entry points
    # ------------------------------------------------------------------
    def before_train(self, runner) -> None:
        """Builds (or restores) the controller and hooks the optimizer."""
        resumed = self._resumed_state is not None
        self.controller = controller = self._build_controller(runner)
        if len(controller.mask_state) == 0:
            print_log(
                f'{self._name}: every selected layer is dense '
                f'(init={controller.init!r}), nothing is masked',
                logger='current',
                level=logging.WARNING,
            )
            return

        note = controller.bind(self._find_optimizer(runner))
        if note:
            print_log(
                f'{self._name}: {note}',
                logger='current',
                level=logging.WARNING,
            )
        self._step_hook_handle = controller.register_step_hook()
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                ema_model = hook.ema_model.module
                controller.track_ema(
                    resolve_module(ema_model, self.module_path)
                )
        origin = 'restored from the checkpoint' if resumed else 'built'
        print_log(
            f'{self._name}: {len(controller.mask_state)} masked layers of '
            f'{self.module_path or "the model"} ({origin}), density '
            f'{controller.density:.4f} over {len(controller.selected)} '
            f'selected layers, sparsity={controller.sparsity}, '
            f'init={controller.init}, growth={controller.growth}, '
            f'update_interval={controller.update_interval}, optimizer '
            f'steps so far {controller.optimizer_steps}',
            logger='current',
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
        hub = runner.message_hub
        hub.update_scalar('train/sparse/density', controller.density)
        hub.update_scalar(
            'train/sparse/prune_rate', controller.current_prune_rate
        )
        for group, density in controller.group_densities.items():
            hub.update_scalar(f'train/sparse/density_{group}', density)

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
        if not runner._resume:
            return  # load_from: masks are built from the loaded weights
        if not isinstance(checkpoint, Mapping):
            raise TypeError(
                f'{self._name}: the checkpoint being resumed is a '
                f'{type(checkpoint).__name__}, not a dict; it is no '
                'mmengine checkpoint'
            )
        if CHECKPOINT_KEY not in checkpoint:
            raise KeyError(
                f'{self._name}: the checkpoint being resumed has no '
                f'{CHECKPOINT_KEY!r} state (masks and update counter), so '
                'sparse training cannot continue exactly; it was probably '
                'saved without this hook. Use load_from instead of resume '
                'to start sparse training from its weights.'
            )
        state = checkpoint[CHECKPOINT_KEY]
        check_saved_state(state)
        self._resumed_state = state

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    @staticmethod
    def _unwrap(model: nn.Module) -> nn.Module:
        return model.module if is_model_wrapper(model) else model

    def _build_controller(self, runner) -> DynamicSparsity:
        """The controller over ``model.<module_path>``, with the masks of
        the resumed checkpoint or freshly drawn ones."""
        model = self._unwrap(runner.model)
        settings = dict(self.settings)
        if settings['seed'] is None:
            settings['seed'] = runner.seed
        if settings['total_steps'] is None:
            accumulate = getattr(
                runner.optim_wrapper, '_accumulative_counts', 1
            )
            settings['total_steps'] = math.ceil(runner.max_iters / accumulate)
        controller = DynamicSparsity(
            resolve_module(model, self.module_path), **settings
        )
        controller.name = self._name
        if self._resumed_state is not None:
            self._check_resumed_settings(self._resumed_state)
            controller.load_state_dict(self._resumed_state)
            self._resumed_state = None
            return controller
        scores = None
        if controller.init == 'snip':
            names = list(controller.selected)
            scores = self._snip_scores(runner, model, names)
        controller.build_masks(scores)
        return controller

    def _check_resumed_settings(self, state: Mapping) -> None:
        """The resumed masks win over the config: warn when they were
        built with another ``sparsity`` / ``init``."""
        saved_path = state.get('module_path', '') or None
        if saved_path != (self.module_path or None):
            raise ValueError(
                f'{self._name}: the resumed masks are over module_path='
                f'{saved_path!r}, the config says module_path='
                f'{self.module_path!r}; resume with the same module_path'
            )
        differences = [
            f'{key}={state[key]!r} (checkpoint) vs {key}='
            f'{self.settings[key]!r} (config)'
            for key in ('sparsity', 'init')
            if key in state and state[key] != self.settings[key]
        ]
        if differences:
            print_log(
                f"{self._name}: resuming keeps the checkpoint's masks, "
                f'which were built with other settings than the config: '
                f'{"; ".join(differences)}. Training goes on with the '
                "checkpoint's masks; use load_from instead of resume to "
                'build new masks with the config.',
                logger='current',
                level=logging.WARNING,
            )

    def _snip_scores(self, runner, model, names) -> dict:
        """SNIP scores of ``names`` (relative to ``module_path``) on one
        training batch (see the class docstring)."""
        return snip_scores(
            model,
            lambda scratch: self._snip_loss(
                scratch, _sample_batch(runner.train_dataloader)
            ),
            names,
            self.module_path,
        )

    def _snip_loss(self, scratch: nn.Module, batch) -> torch.Tensor:
        preprocessor = scratch.data_preprocessor
        if getattr(preprocessor, 'batch_augments', None) is not None:
            preprocessor.batch_augments = None  # the copy only
        data = preprocessor(batch, True)
        labels = _hard_labels(data)
        if labels is None:
            losses = scratch._run_forward(data, mode='loss')
            loss, _ = scratch.parse_losses(losses)
            return loss
        logits = scratch._run_forward(data, mode='tensor')
        if (
            not torch.is_tensor(logits)
            or logits.dim() != 2
            or logits.shape[0] != labels.numel()
        ):
            raise RuntimeError(
                f'{self._name}: SNIP scores classifiers with cross-entropy '
                f"on the logits of forward(mode='tensor'), which must be "
                f'an (N, num_classes) tensor for {labels.numel()} samples; '
                f'got {getattr(logits, "shape", type(logits).__name__)}'
            )
        return F.cross_entropy(logits.float(), labels.to(logits.device))

    def _find_optimizer(self, runner) -> torch.optim.Optimizer:
        wrapper = runner.optim_wrapper
        wrappers = (
            list(wrapper.values())
            if isinstance(wrapper, OptimWrapperDict)
            else [wrapper]
        )
        masked = {id(p) for p in self.controller.mask_state.params.values()}
        holders = [
            w.optimizer
            for w in wrappers
            if any(
                id(p) in masked
                for group in w.optimizer.param_groups
                for p in group['params']
            )
        ]
        if len(holders) != 1:
            raise RuntimeError(
                f'{self._name} needs exactly one optimizer holding the '
                f'masked parameters, found {len(holders)}'
            )
        return holders[0]


@HOOKS.register_module()
class StaticSparsityHook(SparseTrainingHook):
    """Keeps the zeros of a sparse checkpoint while fine-tuning.

    :class:`SparseTrainingHook` with ``init='from_weights'`` and no mask
    updates: the masks are ``weight != 0`` of the loaded weights (load them
    with ``load_from`` or the backbone's ``init_cfg``), layers without zeros
    stay dense, and masked weights (and SGD's momentum buffer) are zeroed
    after every optimizer step.

    Args:
        module_path (str, optional): Attribute path of the module whose
            zeros are kept. Defaults to ``'backbone'``; None for the whole
            model.
        include (str | Sequence[str], optional): ``fnmatch`` patterns over
            parameter names relative to that module.
        exclude (str | Sequence[str], optional): Patterns to leave dense.
    """

    def __init__(
        self,
        module_path: Optional[str] = 'backbone',
        include: Patterns = None,
        exclude: Patterns = None,
    ) -> None:
        super().__init__(
            sparsity=0.0,
            init='from_weights',
            update_interval=None,
            module_path=module_path,
            include=include,
            exclude=exclude,
        )

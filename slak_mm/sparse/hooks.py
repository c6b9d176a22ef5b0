"""mmengine hooks that train a model sparse (SLaK's recipe) or keep a sparse
checkpoint sparse while fine-tuning.

The algorithms live in plain torch (:mod:`.masking`, :mod:`.initialization`,
:mod:`.update`); these hooks only decide when to call them.
"""

import contextlib
import copy
import logging
import math
import random
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from .initialization import (
    INIT_MODES,
    check_sparsity,
    initial_masks,
    seeded_generator,
)
from .masking import (
    MaskState,
    broadcast_masks,
    resolve_module,
    select_maskable_parameters,
)
from .update import check_growth_mode, cosine_prune_rate, prune_and_regrow

CHECKPOINT_KEY = 'sparse_training'

# A masked parameter's logging group: SLaK / ConvNeXt stage i covers
# ``downsample_layers.i`` (the stem for i = 0) and ``stages.i``.
_STAGE_NAME = re.compile(r'(?:^|\.)(?:stages|downsample_layers)\.(\d+)\.')


def _logging_group(name: str) -> str:
    match = _STAGE_NAME.search(name)
    return f'stage{match.group(1)}' if match else name.split('.')[0]


@contextlib.contextmanager
def _keep_host_rngs():
    """Restores Python's and numpy's global RNGs (data pipelines use them)."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


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


@HOOKS.register_module()
class SparseTrainingHook(Hook):
    """Trains the masked weights of a model sparse, with mask updates.

    Masks are built in ``before_train`` (after ``load_from`` / ``init_cfg``
    weights are in) over every trainable 2-D and 4-D parameter of
    ``model.<module_path>`` (or those matching ``include``), and fully dense
    layers drop out. After every real optimizer step (an
    ``optimizer.step`` post-hook, so iterations that only accumulate
    gradients, or whose AMP step was skipped for inf gradients, do not
    count) the masks zero the weights and their optimizer state. Every
    ``update_interval`` optimizer steps, the fraction ``p`` of each layer's
    kept weights with the smallest magnitude is replaced by as many
    positions chosen by ``growth``; regrown weights start at zero and each
    layer's number of kept weights stays the same. ``p`` follows a cosine
    from ``prune_rate`` to ``prune_rate_floor`` over the training length.

    Masks and counters go into the checkpoint (``'sparse_training'``) and
    come back on resume; random choices are seeded from ``(seed, update
    index)``, so a resumed run matches an uninterrupted one. Under DDP rank
    0's masks are broadcast after the initial build and after each update.
    An ``EMAHook``'s averaged copy is masked with the same masks after each
    EMA update, so saved weights (which hold the EMA copy) are exactly zero
    at masked positions.

    Logged through the message hub every iteration: ``sparse/density``
    (kept fraction over all masked weights), ``sparse/prune_rate`` (the
    rate the next update uses) and ``sparse/density_<group>`` per stage
    (``stage<i>`` for SLaK / ConvNeXt names, else the top-level module).

    Args:
        sparsity (float): Pruned fraction over the masked weights, in
            [0, 1). Unused by ``init='from_weights'``. Defaults to 0.4
            (SLaK's width 1.3 at 40% sparsity).
        init (str): ``'snip'`` (layer densities from one training batch's
            ``|w * grad|`` global top-k, random masks at those densities, as
            released), ``'erk'``, ``'uniform'`` or ``'from_weights'`` (keep
            ``weight != 0``, for sparse checkpoints). Defaults to ``'snip'``.
        growth (str): How replaced weights are chosen: ``'random'``,
            ``'gradient'`` (``|grad|``) or ``'momentum'`` (``|exp_avg|`` or
            SGD's ``|momentum_buffer|``). Defaults to ``'random'``.
        prune_rate (float): Initial fraction ``p`` replaced per update, in
            [0, 1]. Defaults to 0.3 (release S/B; T uses 0.5).
        prune_rate_floor (float): Value ``p`` decays to. Defaults to 0.005
            (the release's ``CosineDecay`` ``eta_min``).
        update_interval (int, optional): Optimizer steps between mask
            updates; None for static masks. Defaults to 100 (release S/B;
            T uses 2000).
        stop_update_iter (int, optional): No updates from this iteration
            on (masks are still enforced).
        stop_update_epoch (int, optional): No updates from this epoch on.
        total_steps (int, optional): Optimizer steps of the cosine decay;
            None for ``ceil(max_iters / accumulative_counts)``.
        module_path (str, optional): Attribute path of the module to
            sparsify. Defaults to ``'backbone'``; None masks the whole model
            (the release's ImageNet setting, head included).
        include (str | Sequence[str], optional): ``fnmatch`` patterns over
            parameter names relative to that module, e.g.
            ``'*large_kernel*'``; None masks every 2-D and 4-D weight.
        exclude (str | Sequence[str], optional): Patterns to leave dense.
        erk_power (float): ERK power scale. Defaults to 1.
        seed (int, optional): Seed of the random masks and random growth;
            None uses the runner's seed.
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
        include: Optional[Union[str, Sequence[str]]] = None,
        exclude: Optional[Union[str, Sequence[str]]] = None,
        erk_power: float = 1.0,
        seed: Optional[int] = None,
    ) -> None:
        if init not in INIT_MODES:
            raise ValueError(
                f'unknown sparse init mode {init!r}; expected one of '
                f'{", ".join(INIT_MODES)}'
            )
        check_growth_mode(growth)
        check_sparsity(sparsity)
        if not 0.0 <= prune_rate_floor <= prune_rate <= 1.0:
            raise ValueError(
                'need 0 <= prune_rate_floor <= prune_rate <= 1, got '
                f'prune_rate={prune_rate}, '
                f'prune_rate_floor={prune_rate_floor}'
            )
        if update_interval is not None and update_interval < 1:
            raise ValueError(
                'update_interval must be a positive number of optimizer '
                f'steps or None (static masks), got {update_interval}'
            )
        if stop_update_iter is not None and stop_update_epoch is not None:
            raise ValueError(
                'set at most one of stop_update_iter and stop_update_epoch'
            )
        self.sparsity = sparsity
        self.init = init
        self.growth = growth
        self.prune_rate = prune_rate
        self.prune_rate_floor = prune_rate_floor
        self.update_interval = update_interval
        self.stop_update_iter = stop_update_iter
        self.stop_update_epoch = stop_update_epoch
        self.total_steps = total_steps
        self.module_path = module_path
        self.include = include
        self.exclude = exclude
        self.erk_power = erk_power
        self.seed = seed

        self.mask_state: Optional[MaskState] = None
        # Real optimizer steps taken and mask updates made; checkpointed.
        self.optimizer_steps = 0
        self.num_updates = 0
        self._resumed_state: Optional[dict] = None
        self._runner = None
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._step_hook_handle = None
        self._ema_params: List[nn.Parameter] = []
        self._ema_masks: List[torch.Tensor] = []
        self._selected_numels: Dict[str, int] = {}
        self._density = 1.0
        self._group_densities: Dict[str, float] = {}

    # ------------------------------------------------------------------
    # Hook entry points
    # ------------------------------------------------------------------
    def before_train(self, runner) -> None:
        """Builds (or restores) the masks and hooks the optimizer step."""
        self._runner = runner
        model = self._unwrap(runner.model)
        target = resolve_module(model, self.module_path)
        if self.seed is None:
            self.seed = runner.seed
        if self.total_steps is None:
            accumulate = getattr(
                runner.optim_wrapper, '_accumulative_counts', 1
            )
            self.total_steps = math.ceil(runner.max_iters / accumulate)

        selected = select_maskable_parameters(
            target, self.include, self.exclude
        )
        # Selected layers that came out dense still count in the density.
        self._selected_numels = {n: p.numel() for n, p in selected.items()}
        if self._resumed_state is not None:
            state = self._resumed_state
            self.mask_state = MaskState.from_state_dict(target, state)
            self.optimizer_steps = int(state['optimizer_steps'])
            self.num_updates = int(state['num_updates'])
            self._resumed_state = None
        else:
            self.mask_state = self._build_masks(runner, model, selected)
        if len(self.mask_state) == 0:
            print_log(
                'SparseTrainingHook: every selected layer is dense '
                f'(init={self.init!r}), nothing is masked',
                logger='current',
                level=logging.WARNING,
            )
            return

        self._optimizer = self._find_optimizer(runner)
        self.mask_state.apply(self._optimizer)
        self._step_hook_handle = self._optimizer.register_step_post_hook(
            self._after_optimizer_step
        )
        self._collect_ema_params(runner)
        self._mask_ema_copy()
        self._refresh_group_densities()
        print_log(
            f'SparseTrainingHook: {len(self.mask_state)} masked layers of '
            f'{self.module_path or "the model"}, density '
            f'{self._density:.4f} over {len(selected)} selected layers, '
            f'init={self.init}, '
            f'growth={self.growth}, update_interval={self.update_interval}'
            f', optimizer steps so far {self.optimizer_steps}',
            logger='current',
        )

    def after_train_iter(
        self, runner, batch_idx: int, data_batch=None, outputs=None
    ) -> None:
        """Masks the EMA copy and logs density and prune rate."""
        if self.mask_state is None or len(self.mask_state) == 0:
            return
        self._mask_ema_copy()
        hub = runner.message_hub
        hub.update_scalar('train/sparse/density', self._density)
        hub.update_scalar('train/sparse/prune_rate', self.current_prune_rate)
        for group, density in self._group_densities.items():
            hub.update_scalar(f'train/sparse/density_{group}', density)

    def after_train(self, runner) -> None:
        if self._step_hook_handle is not None:
            self._step_hook_handle.remove()
            self._step_hook_handle = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Saves masks and counters; masks the saved weights."""
        if self.mask_state is None:
            return
        checkpoint[CHECKPOINT_KEY] = dict(
            self.mask_state.state_dict(),
            optimizer_steps=self.optimizer_steps,
            num_updates=self.num_updates,
            init=self.init,
            sparsity=self.sparsity,
            module_path=self.module_path or '',
        )
        # The weights are masked after every step already; this also
        # covers whatever another hook (EMAHook) swapped in. Out of place:
        # on CPU the saved tensors alias the live parameters.
        prefix = f'{self.module_path}.' if self.module_path else ''
        weights = checkpoint.get('state_dict', {})
        for name, mask in self.mask_state.masks.items():
            key = prefix + name
            if key in weights:
                mask = mask.to(weights[key].device)
                weights[key] = weights[key].masked_fill(~mask, 0)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keeps the saved masks and counters for ``before_train``."""
        if not runner._resume:
            return  # load_from: masks are built from the loaded weights
        if CHECKPOINT_KEY not in checkpoint:
            raise KeyError(
                'SparseTrainingHook: the checkpoint being resumed has no '
                f'{CHECKPOINT_KEY!r} state (masks and update counter), so '
                'sparse training cannot continue exactly; it was probably '
                'saved without this hook. Use load_from instead of resume '
                'to start sparse training from its weights.'
            )
        self._resumed_state = checkpoint[CHECKPOINT_KEY]

    # ------------------------------------------------------------------
    # The optimizer-step post-hook: runs only when a step really happens
    # ------------------------------------------------------------------
    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.optimizer_steps += 1
        if self._update_due():
            self._update_masks(optimizer)
        self.mask_state.apply(optimizer)

    def _update_due(self) -> bool:
        if not self.update_interval:
            return False
        if self.optimizer_steps % self.update_interval:
            return False
        runner = self._runner
        if (
            self.stop_update_iter is not None
            and runner.iter >= self.stop_update_iter
        ):
            return False
        if (
            self.stop_update_epoch is not None
            and runner.epoch >= self.stop_update_epoch
        ):
            return False
        return True

    @property
    def density(self) -> float:
        """Kept fraction over all selected weights, dense layers included
        (``1 - sparsity`` up to rounding, for the random init modes)."""
        return self._density

    @property
    def current_prune_rate(self) -> float:
        """The prune rate after the optimizer steps taken so far."""
        return cosine_prune_rate(
            self.optimizer_steps,
            self.total_steps,
            self.prune_rate,
            self.prune_rate_floor,
        )

    def _update_masks(self, optimizer) -> None:
        # Before the masks are applied for this step, so gradients and
        # momenta at masked positions still hold this step's values.
        state = self.mask_state
        new_masks = prune_and_regrow(
            state.params,
            state.masks,
            self.current_prune_rate,
            self.growth,
            optimizer=optimizer,
            generator=seeded_generator(self.seed, self.num_updates + 1),
        )
        new_masks = broadcast_masks(new_masks)
        state.update_masks(new_masks)
        self.num_updates += 1
        self._refresh_group_densities()

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    @staticmethod
    def _unwrap(model: nn.Module) -> nn.Module:
        return model.module if is_model_wrapper(model) else model

    def _build_masks(self, runner, model, params) -> MaskState:
        target = resolve_module(model, self.module_path)
        scores = None
        if self.init == 'snip':
            scores = self._snip_scores(runner, model, list(params))
        masks = initial_masks(
            params,
            self.init,
            self.sparsity,
            seeded_generator(self.seed, 0),
            snip_scores=scores,
            erk_power=self.erk_power,
        )
        # Ranks may disagree (SNIP on their own batches): rank 0 decides.
        masks = broadcast_masks(masks)
        return MaskState(target, masks)

    def _snip_scores(
        self, runner, model: nn.Module, names: List[str]
    ) -> Dict[str, torch.Tensor]:
        """``|w * dL/dw|`` of one training batch, on a scratch copy so the
        model's BN statistics and the global RNG stay untouched."""
        devices = (
            [torch.cuda.current_device()] if torch.cuda.is_available() else []
        )
        with torch.random.fork_rng(devices=devices), _keep_host_rngs():
            batch = _sample_batch(runner.train_dataloader)
            scratch = copy.deepcopy(model)
            scratch.train()
            scratch.zero_grad(set_to_none=True)
            data = scratch.data_preprocessor(batch, True)
            losses = scratch._run_forward(data, mode='loss')
            loss, _ = scratch.parse_losses(losses)
            loss.backward()
        scratch_params = dict(
            resolve_module(scratch, self.module_path).named_parameters()
        )
        scores = OrderedDict()
        for name in names:
            param = scratch_params[name]
            grad = param.grad
            if grad is None:
                grad = torch.zeros_like(param)
            scores[name] = (param.detach() * grad).abs()
        return scores

    def _find_optimizer(self, runner) -> torch.optim.Optimizer:
        wrapper = runner.optim_wrapper
        wrappers = (
            list(wrapper.values())
            if isinstance(wrapper, OptimWrapperDict)
            else [wrapper]
        )
        masked = {id(p) for p in self.mask_state.params.values()}
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
                'SparseTrainingHook needs exactly one optimizer holding the '
                f'masked parameters, found {len(holders)}'
            )
        return holders[0]

    def _collect_ema_params(self, runner) -> None:
        self._ema_params, self._ema_masks = [], []
        for hook in runner.hooks:
            if not isinstance(hook, EMAHook) or not hasattr(hook, 'ema_model'):
                continue
            ema_target = resolve_module(
                hook.ema_model.module, self.module_path
            )
            ema_named = dict(ema_target.named_parameters())
            for name, mask in self.mask_state.masks.items():
                # The masks are updated in place, so these stay current.
                self._ema_params.append(ema_named[name])
                self._ema_masks.append(mask)

    @torch.no_grad()
    def _mask_ema_copy(self) -> None:
        for param, mask in zip(self._ema_params, self._ema_masks):
            param.mul_(mask)

    def _refresh_group_densities(self) -> None:
        """Kept fractions over all selected weights (dense layers count as
        fully kept), overall and per group; masks change only at updates,
        so this is not done every step."""
        numels = dict(self._selected_numels)
        numels.update((n, m.numel()) for n, m in self.mask_state.masks.items())
        kept: Dict[str, int] = OrderedDict()
        total: Dict[str, int] = OrderedDict()
        for name, numel in numels.items():
            mask = self.mask_state.masks.get(name)
            group = _logging_group(name)
            kept[group] = kept.get(group, 0) + (
                numel if mask is None else int(mask.sum())
            )
            total[group] = total.get(group, 0) + numel
        self._group_densities = {g: kept[g] / total[g] for g in kept}
        self._density = sum(kept.values()) / sum(total.values())


@HOOKS.register_module()
class StaticSparsityHook(SparseTrainingHook):
    """Keeps the zeros of a sparse checkpoint while fine-tuning.

    :class:`SparseTrainingHook` with ``init='from_weights'`` and no mask
    updates: the masks are ``weight != 0`` of the loaded weights (load them
    with ``load_from`` or the backbone's ``init_cfg``), layers without zeros
    stay dense, and masked weights and their optimizer state are zeroed
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
        include: Optional[Union[str, Sequence[str]]] = None,
        exclude: Optional[Union[str, Sequence[str]]] = None,
    ) -> None:
        super().__init__(
            sparsity=0.0,
            init='from_weights',
            update_interval=None,
            module_path=module_path,
            include=include,
            exclude=exclude,
        )

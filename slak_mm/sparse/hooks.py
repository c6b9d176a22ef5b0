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
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import EMAHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS

from .initialization import (
    INIT_MODES,
    check_sparsity,
    initial_masks,
    is_real_number,
    seeded_generator,
)
from .masking import (
    MaskState,
    broadcast_masks,
    resolve_module,
    select_maskable_parameters,
    update_ema_of_masked_weight,
)
from .update import (
    check_growth_mode,
    check_momentum_optimizer,
    cosine_prune_rate,
    prune_and_regrow,
)

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


def _check_int(
    name: str, value, minimum: Optional[int], allow_none: bool
) -> None:
    """Raises unless ``value`` is an int >= ``minimum`` (or None)."""
    if value is None and allow_none:
        return
    expected = 'an int' if minimum is None else f'an int >= {minimum}'
    expected += ' or None' if allow_none else ''
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f'{name} must be {expected}, got {value!r} '
            f'({type(value).__name__})'
        )
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be {expected}, got {value}')


def _check_number(name: str, value) -> None:
    if not is_real_number(value):
        raise TypeError(
            f'{name} must be a number, got {value!r} ({type(value).__name__})'
        )


def _check_patterns(name: str, value) -> None:
    """``include`` / ``exclude``: None, a string or a list of strings."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) for v in value
    ):
        return
    raise TypeError(
        f'{name} must be None, an fnmatch pattern string or a list of '
        f'them, got {value!r} ({type(value).__name__})'
    )


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


def _check_saved_state(state) -> None:
    """Raises TypeError / KeyError unless ``state`` looks like what
    :meth:`SparseTrainingHook.before_save_checkpoint` writes."""
    where = f'checkpoint[{CHECKPOINT_KEY!r}]'
    if not isinstance(state, Mapping):
        raise TypeError(
            f'{where} must be a dict with masks and counters, got a '
            f'{type(state).__name__}; the checkpoint is damaged or was not '
            'written by SparseTrainingHook'
        )
    for key in ('masks', 'optimizer_steps', 'num_updates'):
        if key not in state:
            raise KeyError(f'{where} has no {key!r} entry')
    masks = state['masks']
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"{where}['masks'] must be a dict of bool tensors by parameter "
            f'name, got a {type(masks).__name__}'
        )
    for name, mask in masks.items():
        if not torch.is_tensor(mask) or mask.dtype != torch.bool:
            raise TypeError(
                f"{where}['masks'][{name!r}] must be a bool tensor, got "
                f'{getattr(mask, "dtype", type(mask).__name__)}'
            )
    for key in ('optimizer_steps', 'num_updates'):
        value = state[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f'{where}[{key!r}] must be an int, got {value!r}')


@HOOKS.register_module()
class SparseTrainingHook(Hook):
    """Trains the masked weights of a model sparse, with mask updates.

    Masks are built in ``before_train`` (after ``load_from`` / ``init_cfg``
    weights are in) over every trainable 2-D and 4-D parameter of
    ``model.<module_path>`` (or those matching ``include``); a layer whose
    drawn mask keeps 99% or more of it stays dense, as released. After
    every real optimizer step (an ``optimizer.step`` post-hook, so
    iterations that only accumulate gradients, or whose AMP step was
    skipped for inf gradients, do not count) the masks zero the weights
    and, as released, SGD's momentum buffer (Adam's moments stay unless
    ``mask_all_optimizer_state``). Every ``update_interval`` optimizer
    steps, the fraction ``p`` of each layer's kept weights with the
    smallest magnitude is replaced by as many positions chosen by
    ``growth``; regrown weights start at zero and each layer's number of
    kept weights stays the same. ``p`` follows the release's cosine from
    ``prune_rate`` to ``prune_rate_floor`` over ``total_steps``.

    Masks and counters go into the checkpoint (``'sparse_training'``) and
    come back on resume; random choices are seeded from ``(seed, update
    index)``, so a resumed run matches an uninterrupted one. Under DDP rank
    0's masks are broadcast after the initial build and after each update.
    An ``EMAHook``'s averaged copy is masked with the same masks after each
    EMA update, and, as in the release's ``ModelEma``, a kept position whose
    average was zero before the update (a regrown weight) takes the
    weight's current value. Saved weights (which hold the EMA copy) are
    exactly zero at masked positions.

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
            released: the batch without batch augmentations such as
            Mixup / CutMix, plain cross-entropy on the hard labels for
            classifiers), ``'erk'``, ``'uniform'`` or ``'from_weights'``
            (keep ``weight != 0``, for sparse checkpoints). Defaults to
            ``'snip'``.
        growth (str): How replaced weights are chosen: ``'random'``,
            ``'gradient'`` (``|grad|``) or ``'momentum'``
            (``|exp_avg / (sqrt(exp_avg_sq) + 1e-8)|`` for Adam-family
            optimizers, SGD's ``|momentum_buffer|``). Defaults to
            ``'random'``.
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
        total_steps (int, optional): Optimizer steps ``T`` of the cosine
            decay (past ``T`` the cosine goes on, as released); None for
            ``ceil(max_iters / accumulative_counts)``. The release uses
            ``len(train_set) // total_batch_size * epochs``.
        module_path (str, optional): Attribute path of the module to
            sparsify. Defaults to ``'backbone'``; None masks the whole model
            (the release's ImageNet setting, head included).
        include (str | Sequence[str], optional): ``fnmatch`` patterns over
            parameter names relative to that module, e.g.
            ``['*large_kernel.vertical.*', '*large_kernel.horizontal.*']``
            (the release's ``--only-L``); None masks every 2-D and 4-D
            weight.
        exclude (str | Sequence[str], optional): Patterns to leave dense.
        erk_power (float): ERK power scale. Defaults to 1.
        seed (int, optional): Seed of the random masks and random growth;
            None uses the runner's seed.
        mask_all_optimizer_state (bool): Also zero every per-parameter
            optimizer state tensor shaped like a masked weight (Adam's
            ``exp_avg`` and ``exp_avg_sq`` included) at masked positions
            after each step, so regrown weights start with fresh moments.
            Not in the release, which masks only SGD's ``momentum_buffer``.
            Defaults to False.
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
        mask_all_optimizer_state: bool = False,
    ) -> None:
        if init not in INIT_MODES:
            raise ValueError(
                f'unknown sparse init mode {init!r}; expected one of '
                f'{", ".join(INIT_MODES)}'
            )
        check_growth_mode(growth)
        check_sparsity(sparsity)
        _check_number('prune_rate', prune_rate)
        _check_number('prune_rate_floor', prune_rate_floor)
        if not 0.0 <= prune_rate_floor <= prune_rate <= 1.0:
            raise ValueError(
                'need 0 <= prune_rate_floor <= prune_rate <= 1, got '
                f'prune_rate={prune_rate}, '
                f'prune_rate_floor={prune_rate_floor}'
            )
        try:
            _check_int('update_interval', update_interval, 1, True)
        except ValueError as err:
            raise ValueError(
                f'{err} (a positive number of optimizer steps, or None '
                'for static masks)'
            ) from None
        _check_int('stop_update_iter', stop_update_iter, 0, True)
        _check_int('stop_update_epoch', stop_update_epoch, 0, True)
        _check_int('total_steps', total_steps, 1, True)
        _check_int('seed', seed, None, True)
        if stop_update_iter is not None and stop_update_epoch is not None:
            raise ValueError(
                'set at most one of stop_update_iter and stop_update_epoch'
            )
        if module_path is not None and not isinstance(module_path, str):
            raise TypeError(
                'module_path must be a dotted attribute path string or '
                f'None, got {module_path!r}'
            )
        _check_patterns('include', include)
        _check_patterns('exclude', exclude)
        _check_number('erk_power', erk_power)
        if not isinstance(mask_all_optimizer_state, bool):
            raise TypeError(
                'mask_all_optimizer_state must be True or False, got '
                f'{mask_all_optimizer_state!r}'
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
        self.mask_all_optimizer_state = mask_all_optimizer_state

        self.mask_state: Optional[MaskState] = None
        # Real optimizer steps taken and mask updates made; checkpointed.
        self.optimizer_steps = 0
        self.num_updates = 0
        self._resumed_state: Optional[dict] = None
        self._runner = None
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._step_hook_handle = None
        # EMA copies of the masked weights, their live weights and masks,
        # and where each EMA copy was zero before its next update.
        self._ema_params: List[torch.Tensor] = []
        self._ema_sources: List[torch.Tensor] = []
        self._ema_masks: List[torch.Tensor] = []
        self._ema_was_zero: List[torch.Tensor] = []
        self._selected_numels: Dict[str, int] = {}
        self._density = 1.0
        self._group_densities: Dict[str, float] = {}

    @property
    def _name(self) -> str:
        return type(self).__name__

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
        resumed = self._resumed_state is not None
        if resumed:
            state = self._resumed_state
            self._adopt_resumed_settings(state)
            self.mask_state = MaskState.from_state_dict(target, state)
            self.optimizer_steps = int(state['optimizer_steps'])
            self.num_updates = int(state['num_updates'])
            self._resumed_state = None
        else:
            self.mask_state = self._build_masks(runner, model, selected)
        if len(self.mask_state) == 0:
            print_log(
                f'{self._name}: every selected layer is dense '
                f'(init={self.init!r}), nothing is masked',
                logger='current',
                level=logging.WARNING,
            )
            return

        self._optimizer = self._find_optimizer(runner)
        if self.growth == 'momentum' and self.update_interval:
            note = check_momentum_optimizer(
                self._optimizer, self.mask_state.params.values()
            )
            if note:
                print_log(
                    f'{self._name}: {note}',
                    logger='current',
                    level=logging.WARNING,
                )
        self.mask_state.apply(self._optimizer, self.mask_all_optimizer_state)
        self._step_hook_handle = self._optimizer.register_step_post_hook(
            self._after_optimizer_step
        )
        self._collect_ema_params(runner)
        self._mask_ema_copy()
        self._refresh_group_densities()
        origin = 'restored from the checkpoint' if resumed else 'built'
        print_log(
            f'{self._name}: {len(self.mask_state)} masked layers of '
            f'{self.module_path or "the model"} ({origin}), density '
            f'{self._density:.4f} over {len(selected)} selected layers, '
            f'sparsity={self.sparsity}, init={self.init}, '
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
        _check_saved_state(state)
        self._resumed_state = state

    # ------------------------------------------------------------------
    # The optimizer-step post-hook: runs only when a step really happens
    # ------------------------------------------------------------------
    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.optimizer_steps += 1
        if self._update_due():
            self._update_masks(optimizer)
        self.mask_state.apply(optimizer, self.mask_all_optimizer_state)

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
        try:
            new_masks = prune_and_regrow(
                state.params,
                state.masks,
                self.current_prune_rate,
                self.growth,
                optimizer=optimizer,
                generator=seeded_generator(self.seed, self.num_updates + 1),
            )
        except FloatingPointError as err:
            raise FloatingPointError(
                f'{self._name}: mask update {self.num_updates + 1} (after '
                f'optimizer step {self.optimizer_steps}, iteration '
                f'{self._runner.iter + 1}) stopped the run: {err}'
            ) from err
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

    def _adopt_resumed_settings(self, state: Mapping) -> None:
        """The resumed masks win over the config: warn when they were
        built with another ``sparsity`` / ``init``, and log their values."""
        saved_path = state.get('module_path', '') or None
        if saved_path != (self.module_path or None):
            raise ValueError(
                f'{self._name}: the resumed masks are over module_path='
                f'{saved_path!r}, the config says module_path='
                f'{self.module_path!r}; resume with the same module_path'
            )
        differences = [
            f'{key}={state[key]!r} (checkpoint) vs {key}='
            f'{getattr(self, key)!r} (config)'
            for key in ('sparsity', 'init')
            if key in state and state[key] != getattr(self, key)
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
            for key in ('sparsity', 'init'):
                if key in state:
                    setattr(self, key, state[key])

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
        model's BN statistics and the global RNG stay untouched.

        As released, the batch is scored without batch augmentations
        (the data preprocessor's ``batch_augments``, e.g. Mixup / CutMix,
        are switched off on the copy), and a classifier's loss is plain
        cross-entropy of its logits against the hard labels (not the
        model's own, e.g. label-smoothed, loss). Other models (segmentors,
        detectors) use their own loss.
        """
        devices = (
            [torch.cuda.current_device()] if torch.cuda.is_available() else []
        )
        with torch.random.fork_rng(devices=devices), _keep_host_rngs():
            batch = _sample_batch(runner.train_dataloader)
            scratch = copy.deepcopy(model)
            scratch.train()
            scratch.zero_grad(set_to_none=True)
            loss = self._snip_loss(scratch, batch)
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
                f'{self._name} needs exactly one optimizer holding the '
                f'masked parameters, found {len(holders)}'
            )
        return holders[0]

    def _collect_ema_params(self, runner) -> None:
        self._ema_params, self._ema_sources = [], []
        self._ema_masks, self._ema_was_zero = [], []
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
                self._ema_sources.append(self.mask_state.params[name])
                self._ema_masks.append(mask)
                self._ema_was_zero.append(
                    torch.zeros_like(ema_named[name], dtype=torch.bool)
                )

    @torch.no_grad()
    def _mask_ema_copy(self) -> None:
        """Runs after each EMA update: regrown positions take the weight's
        value, masked ones are zeroed (the release's ``ModelEma``)."""
        for ema, source, mask, was_zero in zip(
            self._ema_params,
            self._ema_sources,
            self._ema_masks,
            self._ema_was_zero,
        ):
            update_ema_of_masked_weight(ema, source, mask, was_zero)

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

"""Dynamic sparse training as one object: masks, step counting, the update
schedule, the RNG index and the checkpoint state.

Plain torch, no runner. :class:`DynamicSparsity` is used directly in a
hand-written training loop, and the mmengine hooks in
:mod:`slak_mm.engine.hooks` only build it, call it at runner events, save
and load its state, and log.
"""

from collections import OrderedDict
from collections.abc import Mapping
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .checks import CHECKPOINT_KEY, check_saved_state
from .density import group_densities, mask_counts, overall_density
from .initialization import initial_masks, seeded_generator
from .masking import (
    MaskState,
    broadcast_masks,
    select_maskable_parameters,
    update_ema_of_masked_weight,
)
from .settings import SparsitySettings
from .update import (
    check_momentum_optimizer,
    cosine_prune_rate,
    prune_and_regrow,
)

__all__ = ['CHECKPOINT_KEY', 'DynamicSparsity', 'SparsitySettings']


class DynamicSparsity:
    """SLaK's dynamic sparse training of one module, without a runner.

    Selects every trainable 2-D and 4-D parameter of ``module`` (or those
    matching ``include`` minus ``exclude``), builds the initial masks
    (:meth:`build_masks`; a layer whose drawn mask keeps 99% or more stays
    dense, as released), and after every optimizer step (:meth:`step`)
    zeroes the masked weights and, as released, SGD's momentum buffer.
    Every ``update_interval`` steps the fraction ``p`` of each layer's kept
    weights with the smallest magnitude is replaced by as many positions
    chosen by ``growth``; regrown weights start at zero. ``p`` follows the
    release's cosine from ``prune_rate`` to ``prune_rate_floor`` over
    ``total_steps``. Random draws are seeded from ``(seed, draw index)``
    (0 for the initial masks, u for the u-th update), so a run restored
    with :meth:`load_state_dict` continues exactly as an uninterrupted
    one. Under ``torch.distributed`` rank 0's masks are broadcast after the
    build and after each update.

    Example::

        >>> sparse = DynamicSparsity(model, init='erk', total_steps=1000)
        >>> sparse.build_masks()
        >>> sparse.bind(optimizer)
        >>> for images, labels in loader:
        ...     optimizer.zero_grad()
        ...     F.cross_entropy(model(images), labels).backward()
        ...     optimizer.step()
        ...     sparse.step()

    Args:
        module (nn.Module): The module to sparsify; mask names are relative
            to it.
        **settings: The fields of :class:`~.settings.SparsitySettings`
            (``sparsity``, ``init``, ``growth``, ``prune_rate``,
            ``prune_rate_floor``, ``update_interval``, ``stop_update_iter``,
            ``stop_update_epoch``, ``total_steps``, ``include``,
            ``exclude``, ``erk_power``, ``seed``,
            ``mask_all_optimizer_state``), with its defaults; each is also
            an attribute of the controller. ``seed`` must be set, and
            ``total_steps`` when ``update_interval`` is.

    Attributes:
        iteration (int | None): The current 0-based iteration, for
            ``stop_update_iter`` and messages; None counts one iteration
            per optimizer step.
        epoch (int | None): The current 0-based epoch, for
            ``stop_update_epoch``.
        name (str): Prefix of error messages.
    """

    def __init__(self, module: nn.Module, **settings) -> None:
        checked = SparsitySettings(**settings).check_complete()
        self.module = module
        self.sparsity = checked.sparsity
        self.init = checked.init
        self.growth = checked.growth
        self.prune_rate = checked.prune_rate
        self.prune_rate_floor = checked.prune_rate_floor
        self.update_interval = checked.update_interval
        self.stop_update_iter = checked.stop_update_iter
        self.stop_update_epoch = checked.stop_update_epoch
        self.total_steps = checked.total_steps
        self.include = checked.include
        self.exclude = checked.exclude
        self.erk_power = checked.erk_power
        self.seed = checked.seed
        self.mask_all_optimizer_state = checked.mask_all_optimizer_state
        self.name = type(self).__name__
        self.iteration: Optional[int] = None
        self.epoch: Optional[int] = None

        self.selected = select_maskable_parameters(
            module, self.include, self.exclude
        )
        self.mask_state: Optional[MaskState] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        # Real optimizer steps taken and mask updates made; checkpointed.
        self.optimizer_steps = 0
        self.num_updates = 0
        # EMA copies of the masked weights, their live weights and masks,
        # and where each EMA copy was zero before its next update.
        self._ema_params: List[torch.Tensor] = []
        self._ema_sources: List[torch.Tensor] = []
        self._ema_masks: List[torch.Tensor] = []
        self._ema_was_zero: List[torch.Tensor] = []
        self._density = 1.0
        self._group_densities: Dict[str, float] = {}

    # ------------------------------------------------------------------
    # Masks
    # ------------------------------------------------------------------
    def build_masks(
        self, snip_scores: Optional[Mapping[str, torch.Tensor]] = None
    ) -> MaskState:
        """Draws the initial masks over the selected parameters.

        Args:
            snip_scores (Mapping[str, Tensor], optional): ``|w * grad|`` by
                name, needed for ``init='snip'`` (see
                :func:`~.snip.snip_scores`).
        """
        masks = initial_masks(
            self.selected,
            self.init,
            self.sparsity,
            seeded_generator(self.seed, 0),
            snip_scores=snip_scores,
            erk_power=self.erk_power,
        )
        # Ranks may disagree (SNIP on their own batches): rank 0 decides.
        self.mask_state = MaskState(self.module, broadcast_masks(masks))
        self._refresh_densities()
        return self.mask_state

    def bind(self, optimizer: torch.optim.Optimizer) -> Optional[str]:
        """Takes the optimizer holding the masked parameters and applies
        the masks to the weights and its state.

        Returns:
            str | None: A note when ``growth='momentum'`` cannot yet tell
            whether the optimizer keeps momentum state (checked again at
            the first update).

        Raises:
            ValueError: If ``growth='momentum'`` and the optimizer keeps no
                momentum state.
        """
        self._require_masks()
        self.optimizer = optimizer
        note = None
        if self.growth == 'momentum' and self.update_interval:
            note = check_momentum_optimizer(
                optimizer, self.mask_state.params.values()
            )
        self.mask_state.apply(optimizer, self.mask_all_optimizer_state)
        return note

    def register_step_hook(self):
        """Calls :meth:`step` after every ``optimizer.step()`` that runs
        (an AMP step skipped for inf gradients does not).

        Returns:
            The handle; ``handle.remove()`` detaches it.
        """
        self._require_bound()
        return self.optimizer.register_step_post_hook(
            lambda optimizer, args, kwargs: self.step()
        )

    def step(self) -> None:
        """Counts one optimizer step, updates the masks when due, and
        zeroes the masked weights (and SGD's momentum there).

        Call it right after ``optimizer.step()``.
        """
        self._require_bound()
        self.optimizer_steps += 1
        if self.update_due():
            self.update_masks()
        self.mask_state.apply(self.optimizer, self.mask_all_optimizer_state)

    def update_due(self) -> bool:
        """Whether the step just counted triggers a mask update."""
        if not self.update_interval:
            return False
        if self.optimizer_steps % self.update_interval:
            return False
        if (
            self.stop_update_iter is not None
            and self._current_iteration() >= self.stop_update_iter
        ):
            return False
        if self.stop_update_epoch is not None:
            if self.epoch is None:
                raise ValueError(
                    f'{self.name}: stop_update_epoch is set, so the '
                    'current epoch must be set as .epoch'
                )
            if self.epoch >= self.stop_update_epoch:
                return False
        return True

    def update_masks(self) -> None:
        """One prune-and-regrow update at the current prune rate.

        Run it after the optimizer step and before the masks are applied,
        so gradients and momenta at masked positions still hold this
        step's values (:meth:`step` does).
        """
        self._require_bound()
        state = self.mask_state
        try:
            new_masks = prune_and_regrow(
                state.params,
                state.masks,
                self.current_prune_rate,
                self.growth,
                optimizer=self.optimizer,
                generator=seeded_generator(self.seed, self.num_updates + 1),
            )
        except FloatingPointError as err:
            raise FloatingPointError(
                f'{self.name}: mask update {self.num_updates + 1} (after '
                f'optimizer step {self.optimizer_steps}, iteration '
                f'{self._current_iteration() + 1}) stopped the run: {err}'
            ) from err
        state.update_masks(broadcast_masks(new_masks))
        self.num_updates += 1
        self._refresh_densities()

    @property
    def current_prune_rate(self) -> float:
        """The prune rate after the optimizer steps taken so far (the
        initial rate when there is no ``total_steps``)."""
        if self.total_steps is None:
            return self.prune_rate
        return cosine_prune_rate(
            self.optimizer_steps,
            self.total_steps,
            self.prune_rate,
            self.prune_rate_floor,
        )

    @property
    def density(self) -> float:
        """Kept fraction over all selected weights, layers that stayed
        dense counted as fully kept."""
        return self._density

    @property
    def group_densities(self) -> Dict[str, float]:
        """Kept fraction per stage group (``stem``, ``stage<i>``, else the
        top-level module; see :func:`.density.stage_group`)."""
        return dict(self._group_densities)

    def describe(self) -> str:
        """One line on the masks, settings and progress, for logs."""
        return (
            f'density {self.density:.4f} over {len(self.selected)} selected '
            f'layers, sparsity={self.sparsity}, init={self.init}, '
            f'growth={self.growth}, update_interval={self.update_interval}, '
            f'optimizer steps so far {self.optimizer_steps}'
        )

    # ------------------------------------------------------------------
    # EMA copy and saved weights
    # ------------------------------------------------------------------
    def track_ema(self, ema_module: nn.Module) -> None:
        """Keeps an EMA copy of ``module`` masked (see :meth:`mask_ema`).

        Args:
            ema_module (nn.Module): The averaged copy of the sparsified
                module, with the same parameter names.
        """
        self._require_masks()
        ema_named = dict(ema_module.named_parameters())
        for name, mask in self.mask_state.masks.items():
            # The masks are updated in place, so these stay current.
            self._ema_params.append(ema_named[name])
            self._ema_sources.append(self.mask_state.params[name])
            self._ema_masks.append(mask)
            self._ema_was_zero.append(
                torch.zeros_like(ema_named[name], dtype=torch.bool)
            )
        self.mask_ema()

    @torch.no_grad()
    def mask_ema(self) -> None:
        """Call after each EMA update: regrown positions take the weight's
        value, masked ones are zeroed (the release's ``ModelEma``)."""
        for ema, source, mask, was_zero in zip(
            self._ema_params,
            self._ema_sources,
            self._ema_masks,
            self._ema_was_zero,
        ):
            update_ema_of_masked_weight(ema, source, mask, was_zero)

    def mask_weights(
        self, weights: Dict[str, torch.Tensor], prefix: str = ''
    ) -> None:
        """Zeroes masked entries of a state dict, out of place (on CPU its
        tensors may alias the live parameters).

        Args:
            weights (dict[str, Tensor]): Modified in place; keys are
                ``prefix + mask name``.
            prefix (str): E.g. ``'backbone.'``.
        """
        self._require_masks()
        for name, mask in self.mask_state.masks.items():
            key = prefix + name
            if key in weights:
                mask = mask.to(weights[key].device)
                weights[key] = weights[key].masked_fill(~mask, 0)

    # ------------------------------------------------------------------
    # Checkpoint state
    # ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Masks (CPU bool tensors), counters and the settings the masks
        were built with; loadable under ``weights_only=True``."""
        self._require_masks()
        return dict(
            self.mask_state.state_dict(),
            optimizer_steps=self.optimizer_steps,
            num_updates=self.num_updates,
            init=self.init,
            sparsity=self.sparsity,
        )

    def load_state_dict(self, state: Mapping) -> None:
        """Restores masks and counters; the saved ``init`` and
        ``sparsity`` (what the masks were built with) replace the
        constructor's.

        Raises:
            TypeError, KeyError: If ``state`` is damaged (named).
        """
        check_saved_state(state)
        for key in ('sparsity', 'init'):
            if key in state:
                setattr(self, key, state[key])
        self.mask_state = MaskState.from_state_dict(self.module, state)
        self.optimizer_steps = int(state['optimizer_steps'])
        self.num_updates = int(state['num_updates'])
        self._refresh_densities()

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    def _current_iteration(self) -> int:
        if self.iteration is not None:
            return self.iteration
        return self.optimizer_steps - 1

    def _require_masks(self) -> None:
        if self.mask_state is None:
            raise RuntimeError(
                f'{self.name}: no masks yet; call build_masks() or '
                'load_state_dict() first'
            )

    def _require_bound(self) -> None:
        self._require_masks()
        if self.optimizer is None:
            raise RuntimeError(
                f'{self.name}: no optimizer; call bind(optimizer) first'
            )

    def _refresh_densities(self) -> None:
        """Masks change only at builds and updates, so the densities are
        counted then, not at every step."""
        shapes = OrderedDict((n, p.shape) for n, p in self.selected.items())
        # Restored masks count even if the patterns now select less.
        shapes.update((n, m.shape) for n, m in self.mask_state.masks.items())
        counts = mask_counts(shapes, self.mask_state.masks)
        self._group_densities = dict(group_densities(counts))
        self._density = overall_density(counts)

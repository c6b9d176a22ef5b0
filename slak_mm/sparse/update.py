"""Mask updates: magnitude pruning, regrowth, and the prune-rate schedule.

Plain torch, no runner.
"""

import math
from typing import Dict, Mapping, Optional

import torch

GROWTH_MODES = ('random', 'gradient', 'momentum')

# Per-parameter optimizer state that holds a gradient average:
# Adam / AdamW / Adamax (exp_avg), SGD with momentum (momentum_buffer).
MOMENTUM_KEYS = ('exp_avg', 'momentum_buffer')


def check_growth_mode(growth: str) -> None:
    """Raises ValueError for an unknown growth mode."""
    if growth not in GROWTH_MODES:
        raise ValueError(
            f'unknown sparse growth mode {growth!r}; expected one of '
            f'{", ".join(GROWTH_MODES)}'
        )


def cosine_prune_rate(
    step: int, total_steps: int, initial: float, floor: float
) -> float:
    """Prune rate after ``step`` optimizer steps: cosine from ``initial``
    down to ``floor`` at ``total_steps``, then ``floor``.

    This is the release's ``CosineDecay`` (``CosineAnnealingLR`` over the
    training length with ``eta_min`` 0.005), written in closed form so it
    can be evaluated at any step after a resume.
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return floor + 0.5 * (initial - floor) * (1 + math.cos(math.pi * progress))


def num_to_prune(num_kept: int, prune_rate: float) -> int:
    """``ceil(prune_rate * num_kept)`` as released, at most ``num_kept``."""
    return min(num_kept, math.ceil(prune_rate * num_kept))


def magnitude_prune(
    weight: torch.Tensor, mask: torch.Tensor, num_prune: int
) -> torch.Tensor:
    """Drops the ``num_prune`` kept weights of smallest magnitude.

    Args:
        weight (Tensor): Any shape.
        mask (Tensor): Bool, shaped like ``weight``.
        num_prune (int): How many kept positions to drop.

    Returns:
        Tensor: The new bool mask (``mask`` is not modified).
    """
    new_mask = mask.clone()
    if num_prune <= 0:
        return new_mask
    magnitude = weight.detach().abs().float().masked_fill(~mask, math.inf)
    drop = torch.topk(magnitude.reshape(-1), num_prune, largest=False).indices
    new_mask.view(-1)[drop] = False
    return new_mask


def grow(
    mask: torch.Tensor, num_grow: int, scores: torch.Tensor
) -> torch.Tensor:
    """Turns on the ``num_grow`` masked positions with the highest score.

    Args:
        mask (Tensor): Bool, any shape.
        num_grow (int): How many positions to turn on; at most the number
            of ``False`` entries.
        scores (Tensor): Shaped like ``mask``.

    Returns:
        Tensor: The new bool mask (``mask`` is not modified).
    """
    new_mask = mask.clone()
    if num_grow <= 0:
        return new_mask
    candidates = scores.detach().float().to(mask.device)
    candidates = candidates.masked_fill(mask, -math.inf)
    chosen = torch.topk(candidates.reshape(-1), num_grow).indices
    new_mask.view(-1)[chosen] = True
    return new_mask


def growth_scores(
    growth: str,
    param: torch.Tensor,
    optimizer_state: Optional[Mapping] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Scores for choosing regrown positions; higher grows first.

    Args:
        growth (str): ``'random'`` (uniform noise from ``generator``),
            ``'gradient'`` (``|grad|``) or ``'momentum'`` (``|exp_avg|`` of
            Adam-like optimizers or ``|momentum_buffer|`` of SGD).
        param (Tensor): The parameter, with ``.grad`` for ``'gradient'``.
        optimizer_state (Mapping, optional): ``optimizer.state[param]``,
            for ``'momentum'``.
        generator (Generator, optional): CPU generator for ``'random'``.

    Returns:
        Tensor: Scores shaped like ``param``.

    Raises:
        ValueError: For an unknown mode.
        RuntimeError: If the gradient or momentum it needs is missing.
    """
    check_growth_mode(growth)
    if growth == 'random':
        # Drawn on CPU so every device gives the same choice for a seed.
        noise = torch.rand(param.shape, generator=generator)
        return noise.to(param.device)
    if growth == 'gradient':
        if param.grad is None:
            raise RuntimeError(
                "growth='gradient' needs the parameter's gradient, but it "
                'is None'
            )
        return param.grad.detach().abs()
    state = optimizer_state or {}
    for key in MOMENTUM_KEYS:
        if torch.is_tensor(state.get(key)):
            return state[key].detach().abs()
    raise RuntimeError(
        "growth='momentum' needs an optimizer state with "
        f'{" or ".join(MOMENTUM_KEYS)} (Adam-like or SGD with momentum); '
        f'found {sorted(state)}'
    )


@torch.no_grad()
def prune_and_regrow(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    prune_rate: float,
    growth: str,
    optimizer: Optional[torch.optim.Optimizer] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """One mask update; every layer keeps its number of kept weights.

    For each layer, the fraction ``prune_rate`` of its kept weights with
    the smallest magnitude is dropped, then as many positions are turned on
    among all masked ones (just dropped included, as released) by
    ``growth``. Call it after ``optimizer.step()`` and before the masks are
    applied, so gradients and momenta at masked positions still hold this
    step's values; weights that turn on must then restart at zero
    (:meth:`MaskState.update_masks` does that).

    Args:
        params (Mapping[str, Tensor]): Parameters by name.
        masks (Mapping[str, Tensor]): Current bool masks by name.
        prune_rate (float): Fraction of kept weights to replace, in [0, 1].
        growth (str): ``'random'``, ``'gradient'`` or ``'momentum'``.
        optimizer (Optimizer, optional): Needed for ``'momentum'``.
        generator (Generator, optional): CPU generator for ``'random'``;
            layers draw from it in the order of ``masks``.

    Returns:
        dict[str, Tensor]: New bool masks by name.
    """
    check_growth_mode(growth)
    if not 0.0 <= prune_rate <= 1.0:
        raise ValueError(f'prune_rate must lie in [0, 1], got {prune_rate}')
    if growth == 'momentum' and optimizer is None:
        raise ValueError("growth='momentum' needs the optimizer")
    new_masks = {}
    for name, mask in masks.items():
        param = params[name]
        num_prune = num_to_prune(int(mask.sum()), prune_rate)
        pruned = magnitude_prune(param, mask, num_prune)
        state = optimizer.state.get(param, {}) if optimizer else None
        scores = growth_scores(growth, param, state, generator)
        new_masks[name] = grow(pruned, num_prune, scores)
    return new_masks

"""Mask updates: magnitude pruning, regrowth, and the prune-rate schedule.

Plain torch, no runner.
"""

import math
from typing import Dict, Iterable, Mapping, Optional

import torch

from .masking import MOMENTUM_BUFFER_KEY

GROWTH_MODES = ('random', 'gradient', 'momentum')

# Adam-family optimizers keep both moments; the release scores momentum
# growth by ``exp_avg / (sqrt(exp_avg_sq) + 1e-8)`` for them.
ADAM_KEYS = ('exp_avg', 'exp_avg_sq')
ADAM_SCORE_EPS = 1e-8

# torch optimizers whose per-parameter state holds exp_avg and exp_avg_sq.
_ADAM_FAMILY = tuple(
    getattr(torch.optim, name)
    for name in ('Adam', 'AdamW', 'NAdam', 'RAdam')
    if hasattr(torch.optim, name)
)
# torch optimizers that keep no state momentum growth can use.
_NO_MOMENTUM_STATE = tuple(
    getattr(torch.optim, name)
    for name in (
        'Adadelta',
        'Adagrad',
        'Adamax',
        'ASGD',
        'LBFGS',
        'Rprop',
        'SparseAdam',
    )
    if hasattr(torch.optim, name)
)


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
    down to ``floor`` at ``total_steps``.

    This is the release's ``CosineDecay`` (``CosineAnnealingLR`` with
    ``T_max=total_steps`` and ``eta_min=floor``), in closed form so it can
    be evaluated at any step after a resume. Like ``CosineAnnealingLR``,
    the formula goes on past ``total_steps``: the rate rises again (by
    ``(initial - floor) * (1 - cos(pi * (step / total_steps - 1))) / 2``).
    """
    progress = max(step, 0) / max(total_steps, 1)
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
    if not bool(torch.isfinite(weight[mask]).all()):
        # NaN sorts above inf: the masked positions would be "pruned"
        # instead, and the growth after it would raise the density.
        raise FloatingPointError(
            'magnitude pruning needs finite weights, but kept positions '
            'hold NaN or inf'
        )
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


def momentum_score(optimizer_state: Mapping) -> torch.Tensor:
    """Momentum-growth score of one parameter, as released.

    Adam-family state (``exp_avg`` and ``exp_avg_sq``):
    ``|exp_avg / (sqrt(exp_avg_sq) + 1e-8)|``, the size of the step Adam
    would take; SGD with momentum: ``|momentum_buffer|``.

    Args:
        optimizer_state (Mapping): ``optimizer.state[param]``.

    Returns:
        Tensor: Scores shaped like the parameter.

    Raises:
        RuntimeError: If the state holds neither.
    """
    state = optimizer_state or {}
    if all(torch.is_tensor(state.get(key)) for key in ADAM_KEYS):
        exp_avg, exp_avg_sq = (state[key].detach() for key in ADAM_KEYS)
        return (exp_avg / (exp_avg_sq.sqrt() + ADAM_SCORE_EPS)).abs()
    if torch.is_tensor(state.get(MOMENTUM_BUFFER_KEY)):
        return state[MOMENTUM_BUFFER_KEY].detach().abs()
    raise RuntimeError(
        "growth='momentum' needs an optimizer state with exp_avg and "
        'exp_avg_sq (Adam, AdamW, NAdam, RAdam) or momentum_buffer (SGD '
        f'with momentum); found {sorted(state)}'
    )


def check_momentum_optimizer(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]
) -> Optional[str]:
    """Checks before training that momentum growth will find its state.

    The state is empty until the first step, so this goes by the state
    where there is one (a resumed run) and by the optimizer's type and
    ``momentum`` setting otherwise.

    Args:
        optimizer (Optimizer): The optimizer holding ``params``.
        params (Iterable[Tensor]): The masked parameters.

    Returns:
        str | None: A note when the optimizer is of a type this cannot
        judge before its first step (checked again at the first update).

    Raises:
        ValueError: If the optimizer keeps no usable momentum state.
    """
    params = list(params)
    kind = type(optimizer).__name__
    held = {id(p) for p in params}
    if isinstance(optimizer, _ADAM_FAMILY):
        return None
    if isinstance(optimizer, _NO_MOMENTUM_STATE):
        raise ValueError(
            f"growth='momentum' needs exp_avg and exp_avg_sq (Adam, AdamW, "
            f'NAdam, RAdam) or a momentum buffer (SGD with momentum > 0); '
            f'{kind} keeps neither. Use another optimizer or '
            "growth='random' / 'gradient'."
        )
    verified = False
    for param in params:
        state = optimizer.state.get(param)
        if state:  # a resumed run: the state is there to look at
            try:
                momentum_score(state)
            except RuntimeError as err:
                raise ValueError(f'{kind}: {err}') from err
            verified = True
    groups = [
        group
        for group in optimizer.param_groups
        if any(id(p) in held for p in group['params'])
    ]
    if groups and all('momentum' in group for group in groups):
        flat = [g for g in groups if not g['momentum']]
        if flat:
            raise ValueError(
                f"growth='momentum' needs a momentum buffer, but {kind} "
                'has momentum=0 for a parameter group holding masked '
                "weights; set momentum > 0 or use growth='random' / "
                "'gradient'."
            )
        return None
    if verified:
        return None
    return (
        f"growth='momentum': cannot tell whether {kind} keeps exp_avg and "
        'exp_avg_sq or momentum_buffer before its first step; the first '
        'mask update will check'
    )


def growth_scores(
    growth: str,
    param: torch.Tensor,
    optimizer_state: Optional[Mapping] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Scores for choosing regrown positions; higher grows first.

    Args:
        growth (str): ``'random'`` (uniform noise from ``generator``),
            ``'gradient'`` (``|grad|``) or ``'momentum'`` (see
            :func:`momentum_score`).
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
    return momentum_score(optimizer_state)


def check_finite(params: Mapping[str, torch.Tensor]) -> None:
    """Raises FloatingPointError naming every parameter with NaN or inf."""
    bad = [
        name
        for name, param in params.items()
        if not bool(torch.isfinite(param).all())
    ]
    if bad:
        shown = ', '.join(bad[:5]) + (
            f' and {len(bad) - 5} more' if len(bad) > 5 else ''
        )
        raise FloatingPointError(
            f'{len(bad)} masked parameter(s) hold NaN or inf ({shown}); '
            'the training has diverged and a mask update on such weights '
            'would drop the wrong positions'
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

    Raises:
        FloatingPointError: If a masked parameter holds NaN or inf.
    """
    check_growth_mode(growth)
    if not 0.0 <= prune_rate <= 1.0:
        raise ValueError(f'prune_rate must lie in [0, 1], got {prune_rate}')
    if growth == 'momentum' and optimizer is None:
        raise ValueError("growth='momentum' needs the optimizer")
    check_finite({name: params[name] for name in masks})
    new_masks = {}
    for name, mask in masks.items():
        param = params[name]
        num_prune = num_to_prune(int(mask.sum()), prune_rate)
        pruned = magnitude_prune(param, mask, num_prune)
        state = optimizer.state.get(param, {}) if optimizer else None
        scores = growth_scores(growth, param, state, generator)
        new_masks[name] = grow(pruned, num_prune, scores)
    return new_masks

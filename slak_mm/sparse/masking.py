"""Boolean weight masks over a module, and how they are enforced.

Plain torch, no runner: :class:`~.controller.DynamicSparsity` drives these.
"""

import fnmatch
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from slak_mm.utils.modules import resolve_module  # noqa: F401  (re-exported)

from .density import (
    MASKABLE_NDIMS,  # noqa: F401  (re-exported)
    is_maskable,
    mask_counts,
    overall_density,
)

# The optimizer state the release masks with the weights (SGD momentum).
MOMENTUM_BUFFER_KEY = 'momentum_buffer'

Patterns = Optional[Union[str, Sequence[str]]]


def _as_patterns(patterns: Patterns) -> Optional[Sequence[str]]:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def select_maskable_parameters(
    module: nn.Module, include: Patterns = None, exclude: Patterns = None
) -> 'OrderedDict[str, nn.Parameter]':
    """Picks the parameters that get masks.

    Every trainable 2-D and 4-D parameter (conv and linear weights) is
    eligible, as in the release; frozen ones are left alone since sparse
    training could only delete them.

    Args:
        module (nn.Module): Names are relative to this module.
        include (str | Sequence[str], optional): ``fnmatch`` patterns over
            the names, e.g. ``'*large_kernel.vertical.*'`` and
            ``'*large_kernel.horizontal.*'`` for the strips only;
            None takes every eligible parameter.
        exclude (str | Sequence[str], optional): Patterns to leave out.

    Returns:
        OrderedDict[str, Parameter]: The selected parameters by name, in
        ``named_parameters`` order.

    Raises:
        ValueError: If an include pattern matches no eligible parameter, or
            nothing is left after the patterns.
    """
    eligible = OrderedDict(
        (name, param)
        for name, param in module.named_parameters()
        if is_maskable(param) and param.requires_grad
    )
    include = _as_patterns(include)
    exclude = _as_patterns(exclude) or []
    if include is not None:
        for pattern in include:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in eligible):
                examples = ', '.join(list(eligible)[:3]) or 'none'
                raise ValueError(
                    f'include pattern {pattern!r} matches no trainable 2-D '
                    f'or 4-D parameter of {type(module).__name__} '
                    f'(names look like: {examples})'
                )
    selected = OrderedDict(
        (name, param)
        for name, param in eligible.items()
        if (
            include is None
            or any(fnmatch.fnmatchcase(name, p) for p in include)
        )
        and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    )
    if not selected:
        raise ValueError(
            f'no trainable 2-D or 4-D parameter of {type(module).__name__} '
            f'is left to mask (include={include}, exclude={exclude})'
        )
    return selected


class MaskState:
    """Boolean masks over named parameters of one module.

    ``True`` keeps a weight, ``False`` holds it at zero. Parameters whose
    mask is all ``True`` should not be here (they are dense).

    Args:
        module (nn.Module): The module whose ``named_parameters`` the mask
            names refer to (e.g. the backbone).
        masks (Mapping[str, Tensor]): Bool mask of each masked parameter,
            shaped like it, e.g. ``(C, 1, K, s)`` for a vertical strip.

    Raises:
        KeyError: If a name is not a parameter of ``module``.
        ValueError: If a mask is not bool or its shape differs.
    """

    def __init__(
        self, module: nn.Module, masks: Mapping[str, torch.Tensor]
    ) -> None:
        named = dict(module.named_parameters())
        self.module = module
        self.params: Dict[str, nn.Parameter] = OrderedDict()
        self.masks: Dict[str, torch.Tensor] = OrderedDict()
        for name, mask in masks.items():
            if name not in named:
                raise KeyError(
                    f'mask {name!r} names no parameter of '
                    f'{type(module).__name__}'
                )
            param = named[name]
            if mask.dtype != torch.bool or mask.shape != param.shape:
                raise ValueError(
                    f'mask {name!r} must be bool of shape '
                    f'{tuple(param.shape)}, got {mask.dtype} '
                    f'{tuple(mask.shape)}'
                )
            self.params[name] = param
            self.masks[name] = mask.to(param.device).clone()

    def __len__(self) -> int:
        return len(self.masks)

    @torch.no_grad()
    def apply(
        self,
        optimizer: Optional[torch.optim.Optimizer] = None,
        all_state: bool = False,
    ) -> None:
        """Zeroes masked weights and, as released, SGD's momentum there.

        Only ``momentum_buffer`` (SGD, RMSprop with momentum) is masked by
        default; Adam's ``exp_avg`` and ``exp_avg_sq`` at masked positions
        are left as they are, so a regrown weight resumes with its moments.

        Args:
            optimizer (Optimizer, optional): The optimizer of the params.
            all_state (bool): Also zero every other per-parameter state
                tensor shaped like the weight (``exp_avg``, ``exp_avg_sq``,
                ``max_exp_avg_sq``, ...), so a regrown weight starts with
                fresh moments. Not in the release. Defaults to False.
        """
        for name, param in self.params.items():
            mask = self.masks[name]
            param.mul_(mask)
            if optimizer is None:
                continue
            for key, value in optimizer.state.get(param, {}).items():
                if not torch.is_tensor(value) or value.shape != param.shape:
                    continue
                if all_state or key == MOMENTUM_BUFFER_KEY:
                    value.mul_(mask)

    @torch.no_grad()
    def update_masks(
        self, new_masks: Mapping[str, torch.Tensor]
    ) -> Dict[str, int]:
        """Replaces masks in place; weights that become unmasked restart
        at zero.

        Args:
            new_masks (Mapping[str, Tensor]): New bool mask per name (a
                subset of the masked names is fine).

        Returns:
            dict[str, int]: Number of regrown positions per name.
        """
        regrown = {}
        for name, new_mask in new_masks.items():
            mask = self.masks[name]
            new_mask = new_mask.to(mask.device)
            grown = new_mask & ~mask
            self.params[name].masked_fill_(grown, 0)
            regrown[name] = int(grown.sum())
            mask.copy_(new_mask)
        return regrown

    def density(self) -> float:
        """Kept fraction over all masked parameters."""
        shapes = {n: m.shape for n, m in self.masks.items()}
        return overall_density(mask_counts(shapes, self.masks))

    def layer_densities(self) -> Dict[str, float]:
        """Kept fraction of each masked parameter."""
        return {n: m.float().mean().item() for n, m in self.masks.items()}

    def nonzero_counts(self) -> Dict[str, int]:
        """Number of kept positions of each masked parameter."""
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def as_dict(self, prefix: str = '') -> Dict[str, torch.Tensor]:
        """Masks by parameter name, for complexity counters.

        Args:
            prefix (str): Prepended to every name, e.g. ``'backbone.'`` to
                name parameters of the whole model.

        Returns:
            dict[str, Tensor]: ``{prefix + name: bool mask}``, copies shaped
            like the parameters. Parameters not listed are dense.
        """
        return {prefix + n: m.detach().clone() for n, m in self.masks.items()}

    def state_dict(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """Masks on CPU, loadable with ``torch.load(weights_only=True)``."""
        return {'masks': {n: m.cpu().clone() for n, m in self.masks.items()}}

    @classmethod
    def from_state_dict(
        cls, module: nn.Module, state: Mapping[str, Mapping]
    ) -> 'MaskState':
        """Rebuilds masks saved by :meth:`state_dict` over ``module``."""
        return cls(module, state['masks'])


@torch.no_grad()
def update_ema_of_masked_weight(
    ema_weight: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    ema_was_zero: torch.Tensor,
) -> None:
    """Masks an EMA copy after its update, as the release's ``ModelEma``.

    The release gives a kept position whose EMA value was exactly zero
    before the EMA update (a regrown weight, which the masks held at zero)
    the weight's current value instead of ``(1 - decay) * w``, and zeroes
    masked positions. Run this right after the EMA update; ``ema_was_zero``
    must hold ``ema_weight == 0`` from just before it and is refreshed in
    place for the next update.

    Args:
        ema_weight (Tensor): The averaged copy, any shape; updated in place.
        weight (Tensor): The live weight, shaped like ``ema_weight``.
        mask (Tensor): Bool, shaped like ``ema_weight``.
        ema_was_zero (Tensor): Bool, shaped like ``ema_weight``.
    """
    device = ema_weight.device
    mask = mask.to(device)
    fresh = ema_was_zero & mask
    if bool(fresh.any()):
        ema_weight[fresh] = weight.detach().to(device, ema_weight.dtype)[fresh]
    ema_weight.mul_(mask)
    torch.eq(ema_weight, 0, out=ema_was_zero)


def broadcast_masks(
    masks: Mapping[str, torch.Tensor], src: int = 0
) -> Dict[str, torch.Tensor]:
    """Gives every rank the masks of rank ``src`` (one collective call).

    Without an initialized process group the masks come back unchanged.

    Args:
        masks (Mapping[str, Tensor]): Bool masks, same names and shapes on
            every rank, on the device the process group communicates on.

    Returns:
        dict[str, Tensor]: Rank ``src``'s masks.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return dict(masks)
    if dist.get_world_size() == 1 or not masks:
        return dict(masks)
    # gloo has no bool collectives; one flat uint8 buffer is one message.
    flat = torch.cat([m.reshape(-1).to(torch.uint8) for m in masks.values()])
    dist.broadcast(flat, src=src)
    result, offset = {}, 0
    for name, mask in masks.items():
        chunk = flat[offset : offset + mask.numel()]
        result[name] = chunk.view(mask.shape).bool()
        offset += mask.numel()
    return result


def optimizer_holding(
    optimizers: Sequence[torch.optim.Optimizer],
    params: Iterable[torch.Tensor],
    owner: str,
) -> torch.optim.Optimizer:
    """The one optimizer among ``optimizers`` that updates ``params``.

    Raises:
        RuntimeError: If none or several of them hold any of ``params``.
    """
    wanted = {id(p) for p in params}
    holders = [
        optimizer
        for optimizer in optimizers
        if any(
            id(p) in wanted
            for group in optimizer.param_groups
            for p in group['params']
        )
    ]
    if len(holders) != 1:
        raise RuntimeError(
            f'{owner} needs exactly one optimizer holding the masked '
            f'parameters, found {len(holders)}'
        )
    return holders[0]

"""The block MLP of SLaK as a module of its own."""

from typing import Optional

import torch
import torch.nn as nn

from .backends import Backend


class BlockMLP(nn.Module):
    """``fc2(act(fc1(x)))`` over the last axis, run by a backend.

    The layers stay registered on the block that owns them (so the
    ``state_dict`` keeps the released ``pointwise_conv1/2`` names); this
    module holds no parameters, only references to them, and is the place
    to hook: forward hooks on it fire on every backend, while a backend that
    fuses the MLP (``'fast'``) never calls the ``nn.Linear`` modules, so
    hooks on those fire only on ``'reference'`` and ``'native'``.

    Args:
        fc1 (nn.Linear): ``C -> hidden``.
        act (nn.Module): The activation (``nn.GELU``).
        fc2 (nn.Linear): ``hidden -> C_out``.

    Shape:
        - Input: ``(..., C)``.
        - Output: ``(..., C_out)``.
    """

    def __init__(self, fc1: nn.Linear, act: nn.Module, fc2: nn.Linear) -> None:
        super().__init__()
        # A plain tuple: not registered here, so no second state-dict name.
        self.layers = (fc1, act, fc2)

    def forward(
        self, x: torch.Tensor, backend: Optional[Backend] = None
    ) -> torch.Tensor:
        """Runs the MLP with ``backend`` (the layers as modules if None)."""
        fc1, act, fc2 = self.layers
        if backend is None:
            return fc2(act(fc1(x)))
        return backend.mlp(x, fc1, act, fc2)

    def extra_repr(self) -> str:
        fc1, act, fc2 = self.layers
        return (
            f'{fc1.in_features} -> {fc1.out_features} -> '
            f'{type(act).__name__} -> {fc2.out_features}'
        )

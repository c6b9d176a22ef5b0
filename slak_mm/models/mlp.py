"""The block MLP of SLaK as a module of its own."""

from typing import Union

import torch
import torch.nn as nn

from .backends import Backend, TakesBackend, resolve_backend


class BlockMLP(TakesBackend, nn.Module):
    """``fc2(act(fc1(x)))`` over the last axis, run by a backend.

    Holds neither parameters nor layers: the block that owns the layers
    (registered there under the released ``pointwise_conv1/2`` names) passes
    them at every call, so a layer replaced on the block by assignment
    (quantisation, LoRA, ``convert_sync_batchnorm``) is the one that runs.
    This module is the place to hook: forward hooks on it fire on every
    backend, while a backend that fuses the MLP (``'fast'``) never calls the
    ``nn.Linear`` modules, so hooks on those fire only on ``'reference'`` and
    ``'native'``.

    Shape:
        - Input: ``(..., C)``.
        - Output: ``(..., C_out)``.
    """

    def forward(
        self,
        x: torch.Tensor,
        fc1: nn.Linear,
        act: nn.Module,
        fc2: nn.Linear,
        backend: Union[None, str, Backend] = None,
    ) -> torch.Tensor:
        """Runs the MLP.

        Args:
            x (Tensor): ``(..., C)``.
            fc1 (nn.Linear): ``C -> hidden``.
            act (nn.Module): The activation (``nn.GELU``).
            fc2 (nn.Linear): ``hidden -> C_out``.
            backend (str | Backend, optional): What computes it, resolved
                with :func:`~slak_mm.models.backends.resolve_backend`;
                None for ``'auto'``.

        Returns:
            Tensor: ``(..., C_out)``.
        """
        backend = resolve_backend(backend, x.device)
        return backend.mlp(x, fc1, act, fc2)

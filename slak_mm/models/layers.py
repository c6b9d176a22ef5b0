"""Small building blocks shared by the SLaK backbone."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .settings import check_rate


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of channels-first feature maps.

    Args:
        num_channels (int): Number of channels C.
        eps (float): Added to the variance. Defaults to 1e-6 as released.

    Shape:
        - Input: ``(N, C, H, W)`` or an already pooled ``(N, C)``.
        - Output: same shape and memory layout as the input.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.layer_norm(
                x, self.normalized_shape, self.weight, self.bias, self.eps
            )
        if x.dim() != 4:
            raise ValueError(
                'LayerNorm2d expects (N, C, H, W) or (N, C) '
                f'input, got shape {tuple(x.shape)}'
            )
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        x = F.layer_norm(
            x.permute(0, 2, 3, 1),
            self.normalized_shape,
            self.weight,
            self.bias,
            self.eps,
        ).permute(0, 3, 1, 2)
        # The output keeps the input's memory layout, as the released
        # channels-first LayerNorm does: NCHW stays NCHW (the reference
        # path) and channels-last stays channels-last without a copy.
        if channels_last:
            return x
        return x.contiguous()


class DropPath(nn.Module):
    """Stochastic depth: drops whole residual branches per sample.

    Args:
        drop_prob (float): Probability of dropping a sample's branch.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        check_rate('drop_prob', drop_prob)
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        keep = x.new_empty(shape).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'

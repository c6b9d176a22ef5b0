"""``'native'``: standard PyTorch ops (oneDNN on CPU, cuDNN on CUDA).

Channels-last maps through the whole backbone on CPU (oneDNN's depthwise
kernels are several times faster there and the block MLPs need no permute
copies), kernels cropped to the window that can reach the map, eval-mode
BNs and the small kernel folded into the strips. PyTorch's own backward and
``nn.Linear``; under autocast the convs and linears run in its dtype as
autocast decides. ``'auto'`` picks it where no faster backend runs (CUDA
without Triton).
"""

import torch

from slak_mm.ops.same_padding import reachable_kernel

from .base import (
    Backend,
    register_backend,
    same_depthwise_conv,
)


@register_backend
class NativeBackend(Backend):
    name = 'native'
    auto_priority = 0

    def channels_last(self, device: torch.device) -> bool:
        return device.type == 'cpu'

    def conv_same(self, x, weight, bias):
        # Taps outside the reachable window only multiply zero padding.
        weight = reachable_kernel(weight, *x.shape[2:])
        return same_depthwise_conv(x, weight, bias)

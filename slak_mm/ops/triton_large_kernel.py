"""SLaK's large-kernel module computed with the Triton depthwise convs.

:func:`large_kernel_forward_triton` computes exactly what
:class:`~slak_mm.models.large_kernel.LargeKernelConv` computes, from the
module's own parameters (same ``state_dict``, masks untouched):

- BNs in training mode (batch statistics): every branch conv on Triton,
  then its BN, summed;
- BNs in eval mode (also frozen BNs while training, e.g. ``norm_eval``):
  BNs and the small kernel folded into the strips (differentiably), then
  both strips and the bias in one kernel pass
  (:func:`~.triton_dwconv.depthwise_conv_pair_same_triton`; two
  differentiable convs when a gradient is needed);
- deploy form: the fused convs, the same way.

Maps stay channels-last (the kernels' layout). :func:`triton_large_kernels`
routes every large-kernel module of a model through it for the duration
of a ``with`` block; benchmarks and tests use it to compare paths on one
model.
"""

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

from .triton_dwconv import (
    depthwise_conv_pair_same_triton,
    depthwise_conv_same_triton,
)


def _branch_names(module: nn.Module):
    if module.decompose:
        return ('vertical', 'horizontal', 'small')
    return ('large', 'small')


def _folded_kernels(module: nn.Module):
    """The module's BN-folded kernels, small kernel folded in; a list of
    ``(weight (C, 1, kh, kw), bias (C,))``, differentiable."""
    from slak_mm.models.large_kernel import fuse_conv_bn, pad_kernel_to

    small_weight, small_bias = fuse_conv_bn(
        module.small.conv.weight, module.small.bn
    )
    first = module.vertical if module.decompose else module.large
    weight, bias = fuse_conv_bn(first.conv.weight, first.bn)
    weight = weight + pad_kernel_to(small_weight, *weight.shape[2:])
    kernels = [(weight, bias + small_bias)]
    if module.decompose:
        kernels.append(
            fuse_conv_bn(module.horizontal.conv.weight, module.horizontal.bn)
        )
    return kernels


def large_kernel_forward_triton(
    module: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    """The forward of a ``LargeKernelConv`` on the Triton kernels.

    Args:
        module (LargeKernelConv): The module (any mode, deploy or not).
        x (Tensor): ``(N, C, H, W)`` on CUDA (or CPU under
            ``TRITON_INTERPRET=1``).

    Returns:
        Tensor: ``(N, C, H, W)``, channels-last memory.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    if module.deploy:
        if module.decompose:
            vertical = module.fused_vertical
            horizontal = module.fused_horizontal
            kernels = [
                (vertical.weight, vertical.bias),
                (horizontal.weight, horizontal.bias),
            ]
        else:
            kernels = [(module.fused_large.weight, module.fused_large.bias)]
    else:
        branches = [getattr(module, name) for name in _branch_names(module)]
        if any(branch.bn.training for branch in branches):
            # Batch statistics need every branch's own output.
            outs = [
                branch.bn(depthwise_conv_same_triton(x, branch.conv.weight))
                for branch in branches
            ]
            return sum(outs[1:], outs[0])
        kernels = _folded_kernels(module)
    if len(kernels) == 1:
        return depthwise_conv_same_triton(x, *kernels[0])
    (weight1, bias1), (weight2, bias2) = kernels
    return depthwise_conv_pair_same_triton(x, weight1, weight2, bias1 + bias2)


@contextlib.contextmanager
def triton_large_kernels(model: nn.Module) -> Iterator[nn.Module]:
    """Runs every ``LargeKernelConv`` of ``model`` on the Triton kernels
    inside the ``with`` block (parameters, buffers and hooks unchanged).

    Example:
        >>> with triton_large_kernels(model):
        ...     out = model(images.contiguous(
        ...         memory_format=torch.channels_last))
    """
    from slak_mm.models.large_kernel import LargeKernelConv

    modules = [m for m in model.modules() if isinstance(m, LargeKernelConv)]
    if not modules:
        raise ValueError(
            f'{type(model).__name__} has no LargeKernelConv to route'
        )
    for module in modules:
        # An instance attribute shadows the class's forward for this
        # module only; deleting it restores the class's.
        module.forward = _bound_forward(module)
    try:
        yield model
    finally:
        for module in modules:
            del module.forward


def _bound_forward(module: nn.Module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return large_kernel_forward_triton(module, x)

    return forward

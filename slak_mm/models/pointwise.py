"""The block MLP (``Linear -> GELU -> Linear``) on oneDNN's CPU GEMMs.

About two thirds of a SLaK step are the two pointwise layers of every block.
PyTorch runs fp32 ``nn.Linear`` on CPU through MKL, which on some CPUs (AMD
ones in particular) takes a slower code path; oneDNN's inner-product
primitive (``torch.ops.mkldnn._linear_pointwise``, shipped with every CPU
build of PyTorch) runs the same products 1.2-1.8x faster there and fuses
the GELU in eval. :func:`block_mlp` uses it when ``mlp_impl='onednn'``
(chosen by :func:`select_mlp_impl` for the ``'fast'`` conv path on CPU);
results equal ``nn.Linear`` up to fp32 summation order.

In training, :class:`OneDNNMLP` keeps only the MLP input and the pre-GELU
activations for the backward and recomputes the GELU output there, which
saves one ``(N, H, W, 4C)`` activation per block.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .conv_backends import (
    is_tracing,
    onednn_op_available,
    resolve_conv_impl,
)

MLP_IMPLS = ('torch', 'onednn')


def _onednn_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor = None,
    gelu_approximate: str = None,
) -> torch.Tensor:
    """``x @ weight.T + bias`` (then GELU if ``gelu_approximate`` is set).

    Args:
        x (Tensor): Shape ``(M, K)``.
        weight (Tensor): Shape ``(N, K)``, any strides.
        bias (Tensor, optional): Shape ``(N,)``.
        gelu_approximate (str, optional): ``'none'`` (erf) or ``'tanh'``
            to fuse :func:`torch.nn.functional.gelu` into the product.

    Returns:
        Tensor: Shape ``(M, N)``.
    """
    if gelu_approximate is None:
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, 'none', [], ''
        )
    return torch.ops.mkldnn._linear_pointwise(
        x, weight, bias, 'gelu', [], gelu_approximate
    )


class OneDNNMLP(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` on oneDNN GEMMs, recomputing GELU in backward.

    Input gradients are oneDNN products with the transposed weights; weight
    gradients (a reduction over all positions) use ``torch.mm``, which is
    as fast as oneDNN for those shapes.
    """

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2, approximate):
        hidden = _onednn_linear(x, weight1, bias1)
        ctx.save_for_backward(x, hidden, weight1, weight2)
        ctx.approximate = approximate
        ctx.has_bias = (bias1 is not None, bias2 is not None)
        return _onednn_linear(
            F.gelu(hidden, approximate=approximate), weight2, bias2
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, hidden, weight1, weight2 = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        activated = F.gelu(hidden, approximate=ctx.approximate)
        grads = [None] * 6
        if ctx.needs_input_grad[3]:
            grads[3] = grad_out.t().mm(activated)
        if ctx.has_bias[1] and ctx.needs_input_grad[4]:
            grads[4] = grad_out.sum(0)
        del activated
        grad_hidden = torch.ops.aten.gelu_backward(
            _onednn_linear(grad_out, weight2.t()),
            hidden,
            approximate=ctx.approximate,
        )
        if ctx.needs_input_grad[0]:
            grads[0] = _onednn_linear(grad_hidden, weight1.t())
        if ctx.needs_input_grad[1]:
            grads[1] = grad_hidden.t().mm(x)
        if ctx.has_bias[0] and ctx.needs_input_grad[2]:
            grads[2] = grad_hidden.sum(0)
        return tuple(grads)


def block_mlp(
    x: torch.Tensor,
    fc1: nn.Linear,
    act: nn.GELU,
    fc2: nn.Linear,
    mlp_impl: str = 'torch',
) -> torch.Tensor:
    """``fc2(act(fc1(x)))`` over the last axis.

    Args:
        x (Tensor): Shape ``(..., C)``.
        fc1 (nn.Linear): ``C -> hidden``.
        act (nn.GELU): The activation; its ``approximate`` is honoured.
        fc2 (nn.Linear): ``hidden -> C_out``.
        mlp_impl (str): ``'torch'`` (the modules as they are) or
            ``'onednn'`` (see the module docstring; CPU fp32 only, and only
            when :func:`~slak_mm.models.conv_backends.onednn_op_available`
            finds ``_linear_pointwise``).

    Returns:
        Tensor: Shape ``(..., C_out)``.
    """
    if mlp_impl not in MLP_IMPLS:
        raise ValueError(
            f'mlp_impl must be one of {MLP_IMPLS}, got {mlp_impl!r}'
        )
    if mlp_impl == 'torch':
        return fc2(act(fc1(x)))
    if x.device.type != 'cpu' or x.dtype != torch.float32:
        raise ValueError(
            "mlp_impl='onednn' runs fp32 CPU tensors only, got "
            f'{x.dtype} on {x.device}'
        )
    if not isinstance(act, nn.GELU):
        raise TypeError(
            f"mlp_impl='onednn' fuses nn.GELU, got {type(act).__name__}"
        )
    leading = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad
        or any(p.requires_grad for p in (*fc1.parameters(), *fc2.parameters()))
    )
    if needs_grad:
        out = OneDNNMLP.apply(
            x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, act.approximate
        )
    else:
        hidden = _onednn_linear(x, fc1.weight, fc1.bias, act.approximate)
        out = _onednn_linear(hidden, fc2.weight, fc2.bias)
    return out.view(*leading, out.shape[-1])


def select_mlp_impl(
    conv_impl: str, x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear
) -> str:
    """The MLP implementation for a block with ``conv_impl`` on input ``x``.

    ``'onednn'`` for the ``'fast'`` path (``'auto'`` on CPU) on fp32 CPU
    tensors; ``'torch'`` otherwise, and also under CPU autocast, while
    tracing, exporting, compiling or scripting (exported graphs and FLOP
    counters see ``nn.Linear``)
    and when ``fc1`` / ``fc2`` carry forward hooks, which would not run.
    """
    if (
        resolve_conv_impl(conv_impl, x.device) != 'fast'
        or x.device.type != 'cpu'
        or x.dtype != torch.float32
        or torch.is_autocast_enabled('cpu')
        or is_tracing()
        or torch.jit.is_scripting()
        or not onednn_op_available('_linear_pointwise')
    ):
        return 'torch'
    for module in (fc1, fc2):
        if module._forward_hooks or module._forward_pre_hooks:
            return 'torch'
    if nn.modules.module._global_forward_hooks or (
        nn.modules.module._global_forward_pre_hooks
    ):
        return 'torch'
    return 'onednn'

"""``'fast'``: ``'native'`` plus oneDNN kernels and backwards made of fast
forward operations, for CPUs.

- Depthwise convs with a custom backward (:class:`DepthwiseConvSame`). On
  CPU PyTorch's depthwise ``convolution_backward`` spends 6-30x the forward
  time on the weight gradient; here the input gradient is a forward conv
  with the flipped kernel and the weight gradient a forward depthwise conv
  of the input with the output gradient as kernel (:func:`conv_grad_weight`;
  docs/speed.md has the measurements against a Toeplitz-GEMM form and
  PyTorch's own, both slower on every SLaK-T map).
- In eval the two folded strips are summed inside oneDNN's conv (its sum
  post-op, :func:`~.ops.conv_add`).
- Block MLPs on oneDNN's inner product (:class:`OneDNNMLP`): GELU fused in
  eval, recomputed in the backward instead of stored (one ``(N, H, W, 4C)``
  map less per block).
- Under CPU autocast (bf16, or fp16 where oneDNN runs it natively,
  :func:`~.ops.onednn_supports`) the same kernels run in that dtype with
  fp32 accumulation inside oneDNN; inputs, kernels and linear weights are
  cast as autocast would cast them for ``conv2d`` and ``linear``. For a dtype
  oneDNN cannot run natively (fp16 without AVX512-FP16), and while tracing,
  exporting or compiling, standard ops run as in ``'native'``.

Parameters are used as they are (no cache): masks and EMA swaps through
``.data`` are seen at the next call.
"""

import contextlib
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import ops
from .base import compute_dtype, is_tracing, reachable_kernel, register_backend
from .native import NativeBackend

_REDUCED = (torch.bfloat16, torch.float16)
_ONEDNN_DTYPES = (torch.float32,) + _REDUCED


def conv_grad_weight(
    x: torch.Tensor, grad_out: torch.Tensor, kernel_size: Tuple[int, int]
) -> torch.Tensor:
    """Weight gradient of a "same" depthwise conv as one forward conv.

    ``grad_w[c, a, b] = sum_{n, i, j} grad_out[n, c, i, j] *
    x_pad[n, c, i + a, j + b]`` is the cross-correlation of the padded
    input with the output gradient used as a (map-sized) kernel, so a
    depthwise forward conv over the ``N * C`` maps (NCHW, where oneDNN runs
    such kernels fastest) followed by a sum over the batch gives it. The
    long kernel axis is put vertical (transposing the maps), the fast case.

    Args:
        x (Tensor): Input of shape ``(N, C, H, W)``.
        grad_out (Tensor): Output gradient of shape ``(N, C, H, W)``.
        kernel_size (tuple[int, int]): ``(kh, kw)``, odd, with
            ``kh <= 2H - 1`` and ``kw <= 2W - 1`` (see
            :func:`~.base.reachable_kernel`).

    Returns:
        Tensor: Shape ``(C, 1, kh, kw)``.
    """
    kh, kw = kernel_size
    if kw > kh:
        return conv_grad_weight(
            x.transpose(2, 3), grad_out.transpose(2, 3), (kw, kh)
        ).transpose(2, 3)
    batch, channels, height, width = x.shape
    maps = x.contiguous().reshape(1, batch * channels, height, width)
    kernels = grad_out.contiguous().reshape(batch * channels, 1, height, width)
    grad = F.conv2d(
        maps, kernels, padding=(kh // 2, kw // 2), groups=batch * channels
    )
    return grad.reshape(batch, channels, kh, kw).sum(0).unsqueeze(1)


class DepthwiseConvSame(torch.autograd.Function):
    """A "same" depthwise conv whose backward consists of fast operations.

    ``grad_input`` is the correlation of ``grad_output`` with the flipped
    kernel (for stride 1 and symmetric padding the transposed convolution
    is a forward one); ``grad_weight`` comes from :func:`conv_grad_weight`.
    All tensors share one dtype; call it with autocast off.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        kh, kw = weight.shape[2:]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(
            x, weight, bias, padding=(kh // 2, kw // 2), groups=x.shape[1]
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        channels = x.shape[1]
        kh, kw = weight.shape[2:]
        grad_out = grad_out.contiguous(memory_format=_memory_format(x))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(
                grad_out,
                weight.flip(2, 3),
                padding=(kh // 2, kw // 2),
                groups=channels,
            )
        if ctx.needs_input_grad[1]:
            grad_weight = conv_grad_weight(x, grad_out, (kh, kw))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class OneDNNMLP(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` on oneDNN GEMMs, recomputing GELU in backward.

    Input gradients are oneDNN products with the transposed weights; weight
    gradients (a reduction over all positions) use ``torch.mm``, which is
    as fast as oneDNN for those shapes. All tensors share one dtype; call it
    with autocast off.
    """

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2, approximate):
        hidden = ops.linear(x, weight1, bias1)
        ctx.save_for_backward(x, hidden, weight1, weight2)
        ctx.approximate = approximate
        ctx.has_bias = (bias1 is not None, bias2 is not None)
        return ops.linear(
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
        grad_hidden = ops.gelu_backward(
            ops.linear(grad_out, weight2.t()), hidden, ctx.approximate
        )
        if ctx.needs_input_grad[0]:
            grads[0] = ops.linear(grad_hidden, weight1.t())
        if ctx.needs_input_grad[1]:
            grads[1] = grad_hidden.t().mm(x)
        if ctx.has_bias[0] and ctx.needs_input_grad[2]:
            grads[2] = grad_hidden.sum(0)
        return tuple(grads)


def _cast(tensor: Optional[torch.Tensor], dtype: torch.dtype):
    return None if tensor is None else tensor.to(dtype)


def _autocast_off():
    """Leaves CPU autocast for a region whose tensors are already cast (a
    no-op context when autocast is off)."""
    if torch.is_autocast_enabled('cpu'):
        return torch.autocast('cpu', enabled=False)
    return contextlib.nullcontext()


def _runs_on_onednn(x: torch.Tensor, dtype: torch.dtype) -> bool:
    return (
        x.device.type == 'cpu'
        and dtype in _ONEDNN_DTYPES
        and ops.onednn_supports(dtype)
        and not is_tracing()
    )


@register_backend
class FastCPUBackend(NativeBackend):
    name = 'fast'
    device_types = ('cpu',)
    auto_priority = 10

    @classmethod
    def available(cls) -> bool:
        return all(
            ops.available(name)
            for name in ('conv_add', 'linear', 'gelu_backward')
        )

    def depthwise_conv(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        accumulate: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        dtype = compute_dtype(x)
        custom_backward = not is_tracing() and (
            dtype not in _REDUCED or ops.onednn_supports(dtype)
        )
        if not custom_backward:
            return super().depthwise_conv(x, weight, bias, accumulate)
        weight = reachable_kernel(weight, *x.shape[2:])
        kh, kw = weight.shape[2:]
        padding = (kh // 2, kw // 2)
        x, weight, bias = x.to(dtype), weight.to(dtype), _cast(bias, dtype)
        with _autocast_off():
            if torch.is_grad_enabled() and (
                x.requires_grad
                or weight.requires_grad
                or (bias is not None and bias.requires_grad)
            ):
                out = DepthwiseConvSame.apply(x, weight, bias)
            elif (
                accumulate is not None
                and _runs_on_onednn(x, dtype)
                and accumulate.shape == x.shape
                and x.is_contiguous(memory_format=torch.channels_last)
                and accumulate.is_contiguous(memory_format=torch.channels_last)
            ):
                return ops.conv_add(
                    x,
                    accumulate.to(dtype),
                    weight,
                    bias,
                    padding,
                    x.shape[1],
                )
            else:
                out = F.conv2d(
                    x, weight, bias, padding=padding, groups=x.shape[1]
                )
        return out if accumulate is None else accumulate + out

    def mlp(
        self, x: torch.Tensor, fc1: nn.Linear, act: nn.Module, fc2: nn.Linear
    ) -> torch.Tensor:
        dtype = compute_dtype(x)
        if not _runs_on_onednn(x, dtype):
            return super().mlp(x, fc1, act, fc2)
        if not isinstance(act, nn.GELU):
            raise TypeError(
                f"backend 'fast' fuses nn.GELU, got {type(act).__name__}"
            )
        leading = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).to(dtype)
        params = [
            _cast(p, dtype)
            for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        ]
        with _autocast_off():
            if torch.is_grad_enabled() and (
                x.requires_grad
                or any(p is not None and p.requires_grad for p in params)
            ):
                out = OneDNNMLP.apply(x, *params, act.approximate)
            else:
                weight1, bias1, weight2, bias2 = params
                hidden = ops.linear(x, weight1, bias1, act.approximate)
                out = ops.linear(hidden, weight2, bias2)
        return out.view(*leading, out.shape[-1])

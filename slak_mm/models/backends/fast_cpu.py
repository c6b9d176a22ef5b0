"""``'fast'``: ``'native'`` plus oneDNN kernels and backwards made of fast
forward operations, for CPUs.

- Depthwise convs with a custom backward (:func:`depthwise_conv_same`). On
  CPU PyTorch's depthwise ``convolution_backward`` spends 6-30x the forward
  time on the weight gradient; here the input gradient is a forward conv
  with the flipped kernel and the weight gradient a forward depthwise conv
  of the input with the output gradient as kernel (:func:`conv_grad_weight`;
  docs/speed.md has the measurements against a Toeplitz-GEMM form and
  PyTorch's own, both slower on every SLaK-T map).
- In eval the two folded strips are summed inside oneDNN's conv (its sum
  post-op, :func:`~.torch_private.conv_add`).
- Block MLPs on oneDNN's inner product (:func:`mlp`): GELU fused in
  eval, recomputed in the backward instead of stored (one ``(N, H, W, 4C)``
  map less per block).
- Under CPU autocast (bf16, or fp16 where oneDNN runs it natively,
  :func:`~.torch_private.onednn_supports`) the same kernels run in that
  dtype with fp32 accumulation inside oneDNN; inputs, kernels and linear
  weights are cast as autocast would cast them for ``conv2d`` and
  ``linear``. For a dtype oneDNN cannot run natively (fp16 without
  AVX512-FP16), and while tracing or exporting, standard ops run as in
  ``'native'``.
- Each oneDNN kernel with its backward is a ``torch.library.custom_op``
  (``slak_mm::depthwise_conv_same``, ``conv_add``, ``linear``, ``mlp``),
  so ``torch.compile`` keeps them in its graph.

Parameters are used as they are: masks and EMA swaps through ``.data`` are
seen at the next call. Inside :func:`cache_weight_casts` (opt-in, for
inference) the reduced-precision copies of parameters are kept across
no-grad forwards while each parameter's version counter and storage are
unchanged.
"""

import contextlib
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from slak_mm.ops.same_padding import reachable_kernel

from . import torch_private
from .base import (
    compute_dtype,
    is_exporting,
    register_backend,
    same_depthwise_conv,
)
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
            :func:`~slak_mm.ops.same_padding.reachable_kernel`).

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


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _depthwise_conv_grads(ctx, grad_out, x, weight, has_bias):
    """Input, weight and bias gradients of a "same" depthwise conv, each a
    fast forward operation (``None`` where not needed)."""
    channels = x.shape[1]
    kh, kw = weight.shape[2:]
    grad_out = grad_out.contiguous(memory_format=_memory_format(x))
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        # Stride 1 and symmetric padding: the transposed conv is the
        # forward conv with the flipped kernel.
        grad_x = F.conv2d(
            grad_out,
            weight.flip(2, 3),
            padding=(kh // 2, kw // 2),
            groups=channels,
        )
    if ctx.needs_input_grad[1]:
        grad_weight = conv_grad_weight(x, grad_out, (kh, kw))
    if has_bias and ctx.needs_input_grad[2]:
        grad_bias = grad_out.sum((0, 2, 3))
    return grad_x, grad_weight, grad_bias


# The kernels below are custom ops (fake implementations, registered
# autograd) so that torch.compile keeps them in one graph instead of
# tracing through them or falling back to standard ops. Backwards call the
# custom ops too: inductor lowers oneDNN's private linear op only for
# constant weights.


@torch.library.custom_op('slak_mm::depthwise_conv_same', mutates_args=())
def depthwise_conv_same(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """A "same" depthwise conv whose backward consists of fast operations.

    ``grad_input`` is the correlation of ``grad_output`` with the flipped
    kernel; ``grad_weight`` comes from :func:`conv_grad_weight`. All tensors
    share one dtype; call it with autocast off.

    Args:
        x (Tensor): ``(N, C, H, W)``.
        weight (Tensor): ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
        bias (Tensor, optional): ``(C,)``.

    Returns:
        Tensor: ``(N, C, H, W)``, in the memory format of ``x``.
    """
    return same_depthwise_conv(x, weight, bias)


@depthwise_conv_same.register_fake
def _(x, weight, bias):
    return torch.empty_like(x)


def _depthwise_conv_same_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _depthwise_conv_same_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    return _depthwise_conv_grads(ctx, grad_out, x, weight, ctx.has_bias)


depthwise_conv_same.register_autograd(
    _depthwise_conv_same_backward, setup_context=_depthwise_conv_same_setup
)


@torch.library.custom_op('slak_mm::conv_add', mutates_args=())
def conv_add(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    other: torch.Tensor,
) -> torch.Tensor:
    """``other + depthwise_conv_same(x, weight, bias)`` in one oneDNN
    convolution (:func:`~.torch_private.conv_add`, its sum post-op).

    Args:
        x (Tensor): ``(N, C, H, W)``, channels-last.
        weight (Tensor): ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
        bias (Tensor, optional): ``(C,)``.
        other (Tensor): ``(N, C, H, W)``, channels-last; not changed.

    Returns:
        Tensor: ``(N, C, H, W)``, in the memory format of ``x``.
    """
    kh, kw = weight.shape[2:]
    return torch_private.conv_add(
        x, other, weight, bias, (kh // 2, kw // 2), x.shape[1]
    )


@conv_add.register_fake
def _(x, weight, bias, other):
    return torch.empty_like(x)


def _conv_add_setup(ctx, inputs, output):
    x, weight, bias, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _conv_add_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    grads = _depthwise_conv_grads(ctx, grad_out, x, weight, ctx.has_bias)
    return (*grads, grad_out if ctx.needs_input_grad[3] else None)


conv_add.register_autograd(_conv_add_backward, setup_context=_conv_add_setup)


@torch.library.custom_op('slak_mm::linear', mutates_args=())
def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    gelu_approximate: Optional[str],
) -> torch.Tensor:
    """``x @ weight.T + bias`` on oneDNN's inner product, followed by
    ``gelu(., gelu_approximate)`` (fused) unless it is None.

    Args:
        x (Tensor): ``(M, K)``.
        weight (Tensor): ``(N, K)``.
        bias (Tensor, optional): ``(N,)``.
        gelu_approximate (str, optional): ``'none'`` or ``'tanh'``.

    Returns:
        Tensor: ``(M, N)``.
    """
    return torch_private.linear(x, weight, bias, gelu_approximate)


@linear.register_fake
def _(x, weight, bias, gelu_approximate):
    return x.new_empty((x.shape[0], weight.shape[0]))


def _linear_setup(ctx, inputs, output):
    x, weight, bias, approximate = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.approximate = approximate


def _linear_grads(grad_out, x, weight, needs_grad, has_bias):
    """Input, weight and bias gradients of ``x @ weight.T + bias`` for the
    output gradient ``grad_out`` (``None`` where ``needs_grad``, three
    flags, says no). The input gradient is a oneDNN product, the weight
    gradient (a reduction over all rows) ``torch.mm``."""
    grad_x = grad_weight = grad_bias = None
    if needs_grad[0]:
        grad_x = linear(grad_out, weight.t(), None, None)
    if needs_grad[1]:
        grad_weight = grad_out.t().mm(x)
    if has_bias and needs_grad[2]:
        grad_bias = grad_out.sum(0)
    return grad_x, grad_weight, grad_bias


def _linear_backward(ctx, grad_out):
    x, weight, bias = ctx.saved_tensors
    if ctx.approximate is not None:  # GELU recomputed, not stored
        hidden = linear(x, weight, bias, None)
        grad_out = torch_private.gelu_backward(
            grad_out, hidden, ctx.approximate
        )
    grads = _linear_grads(
        grad_out.contiguous(),
        x,
        weight,
        ctx.needs_input_grad[:3],
        bias is not None,
    )
    return (*grads, None)


linear.register_autograd(_linear_backward, setup_context=_linear_setup)


@torch.library.custom_op('slak_mm::mlp', mutates_args=())
def mlp(
    x: torch.Tensor,
    weight1: torch.Tensor,
    bias1: Optional[torch.Tensor],
    weight2: torch.Tensor,
    bias2: Optional[torch.Tensor],
    approximate: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``fc2(gelu(fc1(x)))`` on oneDNN GEMMs, recomputing GELU in backward.

    Input gradients are oneDNN products with the transposed weights; weight
    gradients (a reduction over all positions) use ``torch.mm``, which is
    as fast as oneDNN for those shapes. All tensors share one dtype; call it
    with autocast off.

    Args:
        x (Tensor): ``(M, C)``.
        weight1 (Tensor): ``(4C, C)``; ``bias1`` ``(4C,)`` or None.
        weight2 (Tensor): ``(C, 4C)``; ``bias2`` ``(C,)`` or None.
        approximate (str): GELU's ``'none'`` or ``'tanh'``.

    Returns:
        tuple[Tensor, Tensor]: The output ``(M, C)`` and the hidden map
        before GELU ``(M, 4C)``, kept for the backward.
    """
    hidden = torch_private.linear(x, weight1, bias1)
    out = torch_private.linear(
        F.gelu(hidden, approximate=approximate), weight2, bias2
    )
    return out, hidden


@mlp.register_fake
def _(x, weight1, bias1, weight2, bias2, approximate):
    return (
        x.new_empty((x.shape[0], weight2.shape[0])),
        x.new_empty((x.shape[0], weight1.shape[0])),
    )


def _mlp_setup(ctx, inputs, output):
    x, weight1, bias1, weight2, bias2, approximate = inputs
    ctx.save_for_backward(x, output[1], weight1, weight2)
    # The hidden map is returned for the backward only.
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.approximate = approximate
    ctx.has_bias = (bias1 is not None, bias2 is not None)


def _mlp_backward(ctx, grad_out, _):
    x, hidden, weight1, weight2 = ctx.saved_tensors
    grad_out = grad_out.contiguous()
    activated = F.gelu(hidden, approximate=ctx.approximate)
    # fc2's weight gradients first, so that the activated map is freed
    # before the (M, 4C) input gradient is made.
    _, grad_weight2, grad_bias2 = _linear_grads(
        grad_out,
        activated,
        weight2,
        (False, *ctx.needs_input_grad[3:5]),
        ctx.has_bias[1],
    )
    del activated
    grad_hidden = torch_private.gelu_backward(
        linear(grad_out, weight2.t(), None, None), hidden, ctx.approximate
    )
    grads1 = _linear_grads(
        grad_hidden, x, weight1, ctx.needs_input_grad[:3], ctx.has_bias[0]
    )
    return (*grads1, grad_weight2, grad_bias2, None)


mlp.register_autograd(_mlp_backward, setup_context=_mlp_setup)


# Parameter -> ((version, data_ptr, dtype), cast copy); None: no caching.
_weight_casts: Optional[WeakIdKeyDictionary] = None


@contextlib.contextmanager
def cache_weight_casts():
    """Keeps the bf16/fp16 copies of parameters across forwards inside the
    ``with`` block (inference under CPU autocast).

    Outside it every forward casts the fp32 weights again, as autocast
    does (for SLaK-T 44M values per forward). Inside it a copy is
    reused while its parameter's version counter and ``data_ptr`` are
    unchanged: in-place writes on the parameter (``param.mul_(mask)``,
    ``copy_``, ``load_state_dict``, optimizer steps) and ``param.data =
    ...`` are seen at the next call. Writes through ``param.data``
    (``param.data.copy_(...)``, as mmengine's ``EMAHook`` swaps weights)
    do not bump the version counter and are NOT seen: leave the block
    before such writes. Forwards that record a graph for a parameter cast
    it as usual. The copies are freed when the outermost block exits.

    Example:
        >>> with torch.no_grad(), cache_weight_casts(), torch.autocast(
        ...         'cpu', dtype=torch.bfloat16):
        ...     for images in loader:
        ...         feats = model(images)
    """
    global _weight_casts
    outermost = _weight_casts is None
    if outermost:
        _weight_casts = WeakIdKeyDictionary()
    try:
        yield
    finally:
        if outermost:
            _weight_casts = None


def _cast(tensor: Optional[torch.Tensor], dtype: torch.dtype):
    """``tensor.to(dtype)``, from :func:`cache_weight_casts`'s cache for a
    parameter when one is active and no graph is recorded for it."""
    if tensor is None or tensor.dtype == dtype:
        return tensor
    cache = _weight_casts
    if (
        cache is None
        or not isinstance(tensor, nn.Parameter)
        or (torch.is_grad_enabled() and tensor.requires_grad)
    ):
        return tensor.to(dtype)
    key = (tensor._version, tensor.data_ptr(), dtype)
    entry = cache.get(tensor)
    if entry is None or entry[0] != key:
        entry = (key, tensor.detach().to(dtype))
        cache[tensor] = entry
    return entry[1]


def _cast_conv_inputs(x, weight, bias, dtype):
    """``x``, ``weight`` cropped to the reachable window and ``bias`` in
    ``dtype`` (the cast before the crop: a cached cast crops free)."""
    weight = reachable_kernel(_cast(weight, dtype), *x.shape[2:])
    return x.to(dtype), weight, _cast(bias, dtype)


def _records_graph(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd records a graph for any of ``tensors``."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors
    )


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
        and torch_private.onednn_supports(dtype)
        and not is_exporting()
    )


@register_backend
class FastCPUBackend(NativeBackend):
    name = 'fast'
    device_types = ('cpu',)
    auto_priority = 10
    required_ops = ('conv_add', 'linear', 'gelu_backward')

    @classmethod
    def available(cls) -> bool:
        return all(torch_private.available(name) for name in cls.required_ops)

    def conv_same(self, x, weight, bias):
        dtype = compute_dtype(x)
        if is_exporting() or (
            dtype in _REDUCED and not torch_private.onednn_supports(dtype)
        ):
            return super().conv_same(x, weight, bias)
        x, weight, bias = _cast_conv_inputs(x, weight, bias, dtype)
        with _autocast_off():
            if _records_graph(x, weight, bias):
                return depthwise_conv_same(x, weight, bias)
            return same_depthwise_conv(x, weight, bias)

    def depthwise_conv_sum(self, x, kernels):
        # Without a graph, the second conv adds the first's output while
        # it writes its own (oneDNN's sum post-op): one pass less.
        dtype = compute_dtype(x)
        if (
            len(kernels) != 2
            or not _runs_on_onednn(x, dtype)
            or not x.is_contiguous(memory_format=torch.channels_last)
            or _records_graph(x, *kernels[0], *kernels[1])
        ):
            return super().depthwise_conv_sum(x, kernels)
        x = x.to(dtype)
        first = self.conv_same(x, *kernels[0])
        x, weight, bias = _cast_conv_inputs(x, *kernels[1], dtype)
        with _autocast_off():
            return conv_add(
                x,
                weight,
                bias,
                first.contiguous(memory_format=torch.channels_last),
            )

    def layer_norm(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        # Autocast runs layer_norm in fp32, so a bf16 map would go
        # bf16 -> fp32 -> norm -> bf16 (two copies) on its way to the MLP.
        # PyTorch's CPU kernel takes the reduced-precision map with fp32
        # affine parameters directly, keeps the statistics in fp32 and
        # writes the reduced dtype the MLP's GEMM reads anyway.
        dtype = compute_dtype(x)
        if dtype not in _REDUCED or not _runs_on_onednn(x, dtype):
            return super().layer_norm(x, norm)
        with _autocast_off():
            return F.layer_norm(
                x.to(dtype),
                norm.normalized_shape,
                norm.weight,
                norm.bias,
                norm.eps,
            )

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
            if _records_graph(x, *params):
                out, _ = mlp(x, *params, act.approximate)
            else:
                weight1, bias1, weight2, bias2 = params
                hidden = linear(x, weight1, bias1, act.approximate)
                out = linear(hidden, weight2, bias2, None)
        return out.view(*leading, out.shape[-1])

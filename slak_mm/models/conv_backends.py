"""Implementations of the "same"-padded depthwise convolution of SLaK.

Every implementation computes exactly the same function as ``nn.Conv2d``
with ``groups=C`` and per-axis "same" padding; they differ only in speed
and memory:

- ``'reference'``: as released: NCHW tensors, one ``nn.Conv2d`` per branch,
  PyTorch's own ``convolution_backward``.
- ``'native'``: channels-last tensors on CPU, kernels cropped to the window
  that can reach the feature map, BN folded into the kernels whenever it is
  in eval mode; PyTorch's own backward.
- ``'fast'``: as ``'native'``, with a backward expressed as fast forward
  operations (:class:`DepthwiseConvSame`). On CPU PyTorch's depthwise
  ``convolution_backward`` spends 6-30x the forward time on the weight
  gradient; here the input gradient is a forward convolution with the
  flipped kernel and the weight gradient a forward depthwise convolution
  of the input with the output gradient as kernel
  (:func:`conv_grad_weight`; alternatives: :data:`GRAD_WEIGHT_IMPL`).
  In eval the two folded strips are summed inside oneDNN's conv (its sum
  post-op), and the blocks run their MLPs on oneDNN GEMMs
  (:mod:`slak_mm.models.pointwise`).
- ``'auto'``: ``'fast'`` on CPU; on CUDA ``'native'`` (cuDNN's kernels are
  fast, and nothing needs building).

None of them changes a parameter: all take the ``(C, 1, kh, kw)`` weights of
the modules as they are, so masks and checkpoints are unaffected, and
gradients land on those weights as usual.
"""

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CONV_IMPLS = ('auto', 'reference', 'native', 'fast')


def check_conv_impl(conv_impl: str) -> str:
    """Validates a ``conv_impl`` choice and returns it."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(
            f'conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}'
        )
    return conv_impl


def resolve_conv_impl(conv_impl: str, device: torch.device) -> str:
    """Turns ``'auto'`` into a concrete implementation for ``device``."""
    if conv_impl != 'auto':
        return conv_impl
    return 'fast' if device.type == 'cpu' else 'native'


def uses_channels_last(conv_impl: str, device: torch.device) -> bool:
    """Whether feature maps should be channels-last for ``conv_impl``.

    On CPU oneDNN's depthwise kernels are several times faster on
    channels-last maps, and the block's MLP then needs no permute copies.
    """
    resolved = resolve_conv_impl(conv_impl, device)
    return resolved != 'reference' and device.type == 'cpu'


def reachable_kernel(
    weight: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Crops an odd kernel to the taps that can touch a ``height x width`` map.

    With "same" padding, tap offset ``d`` along an axis of length ``L`` only
    ever multiplies zero padding when ``|d| >= L``, so a kernel axis longer
    than ``2L - 1`` can be cropped to its centre ``2L - 1`` taps exactly.

    Args:
        weight (Tensor): Shape ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
        height (int): Height H of the feature map.
        width (int): Width W of the feature map.

    Returns:
        Tensor: A view of shape ``(C, 1, min(kh, 2H - 1), min(kw, 2W - 1))``.
    """
    kh, kw = weight.shape[2:]
    crop_h = max(0, (kh - (2 * height - 1)) // 2)
    crop_w = max(0, (kw - (2 * width - 1)) // 2)
    if crop_h == 0 and crop_w == 0:
        return weight
    return weight[:, :, crop_h : kh - crop_h, crop_w : kw - crop_w]


def _diagonal_sums(matrices: torch.Tensor) -> torch.Tensor:
    """Sums each diagonal of a batch of square matrices.

    Args:
        matrices (Tensor): Shape ``(B, L, L)``.

    Returns:
        Tensor: Shape ``(B, 2L - 1)``; entry ``d + L - 1`` holds
        ``sum_i matrices[:, i, i + d]``.
    """
    batch, length = matrices.shape[:2]
    # After flipping the rows, diagonal d becomes anti-diagonal d + L - 1;
    # padding each row to 2L and re-reading the buffer with row length
    # 2L - 1 shifts row k right by k, so the anti-diagonals become columns.
    flipped = matrices.flip(1)
    padded = F.pad(flipped, (0, length)).reshape(batch, 2 * length * length)
    skewed = padded[:, : length * (2 * length - 1)]
    return skewed.reshape(batch, length, 2 * length - 1).sum(1)


def toeplitz_grad_weight(
    x: torch.Tensor, grad_out: torch.Tensor, kernel_size: Tuple[int, int]
) -> torch.Tensor:
    """Weight gradient of a "same" depthwise conv as batched GEMMs.

    Along H the convolution is a product with a per-channel Toeplitz
    matrix, so for each tap column ``b`` the products
    ``R_b[c] = G[c] @ X_b[c]^T`` (``G`` the gradient as ``(C, H, N * W)``
    and ``X_b`` the input shifted by ``b`` along W) hold every needed
    correlation, and the gradient of tap ``(a, b)`` is the sum of diagonal
    ``a - kh // 2`` of ``R_b``. This runs at GEMM speed where PyTorch's CPU
    depthwise weight gradient is a slow direct loop.

    Args:
        x (Tensor): Input of shape ``(N, C, H, W)``.
        grad_out (Tensor): Output gradient of shape ``(N, C, H, W)``.
        kernel_size (tuple[int, int]): ``(kh, kw)``, odd, with
            ``kh <= 2H - 1`` and ``kw <= 2W - 1`` (see
            :func:`reachable_kernel`).

    Returns:
        Tensor: Shape ``(C, 1, kh, kw)``.
    """
    kh, kw = kernel_size
    if kw > kh:
        # The Toeplitz products run along the long kernel axis: put it
        # vertical, as conv_grad_weight does.
        return toeplitz_grad_weight(
            x.transpose(2, 3), grad_out.transpose(2, 3), (kw, kh)
        ).transpose(2, 3)
    batch, channels, height, width = x.shape
    pad_w = kw // 2
    padded_width = width + 2 * pad_w
    # Columns run over (n, j) of the W-padded maps; the gradient is zero in
    # the padding columns, so products across sample borders vanish.
    num_cols = batch * padded_width - 2 * pad_w
    x_cols = F.pad(x.permute(1, 2, 0, 3), (pad_w, pad_w)).reshape(
        channels, height, batch * padded_width
    )
    grad_cols = F.pad(grad_out.permute(1, 2, 0, 3), (0, 2 * pad_w))
    grad_cols = grad_cols.reshape(channels, height, batch * padded_width)
    grad_cols = grad_cols[:, :, :num_cols]
    start = height - 1 - kh // 2
    grad = x.new_empty(channels, kw, kh)
    # One tap column at a time, in channel chunks, bounds the temporaries
    # (the ``(c, H, H)`` products and their skewed copy) to about
    # ``_TOEPLITZ_CHUNK_BYTES`` however large the map is.
    chunk = max(1, _TOEPLITZ_CHUNK_BYTES // (16 * height * height))
    for c0 in range(0, channels, chunk):
        c1 = min(channels, c0 + chunk)
        grad_chunk = grad_cols[c0:c1]
        for b in range(kw):
            products = torch.bmm(
                grad_chunk, x_cols[c0:c1, :, b : b + num_cols].transpose(1, 2)
            )  # (c, H, H)
            diagonals = _diagonal_sums(products)  # (c, 2H - 1)
            grad[c0:c1, b] = diagonals[:, start : start + kh]
    return grad.transpose(1, 2).unsqueeze(1)


# Bound on the temporaries of one step of :func:`toeplitz_grad_weight`.
_TOEPLITZ_CHUNK_BYTES = 8 * 2**20


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
    Measured on CPU (2 threads, SLaK-T shapes) this is 1.5-3x faster than
    :func:`toeplitz_grad_weight` for the strips and 1.3-3x faster than
    PyTorch's own weight gradient for the ``5 x 5`` kernel.

    Args:
        x (Tensor): Input of shape ``(N, C, H, W)``.
        grad_out (Tensor): Output gradient of shape ``(N, C, H, W)``.
        kernel_size (tuple[int, int]): ``(kh, kw)``, odd, with
            ``kh <= 2H - 1`` and ``kw <= 2W - 1`` (see
            :func:`reachable_kernel`).

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


# How DepthwiseConvSame computes weight gradients on CPU: 'conv'
# (conv_grad_weight, the fastest for every SLaK shape measured), 'toeplitz'
# (toeplitz_grad_weight for strips, PyTorch's own for square kernels) or
# 'native' (PyTorch's own). Set it to override the choice.
GRAD_WEIGHT_IMPL = 'conv'


def use_toeplitz_grad_weight(
    input_shape: torch.Size, kernel_size: Tuple[int, int]
) -> bool:
    """Toeplitz GEMM or PyTorch's own, with ``GRAD_WEIGHT_IMPL='toeplitz'``.

    The Toeplitz GEMM costs ``L`` multiply-adds per output and tap column
    (``L`` the map length along the long kernel axis) where the direct
    loop costs the taps along that axis, but runs far faster per
    multiply-add. Measured on CPU (1-2 threads) the GEMM wins by 1.3-7x
    for every SLaK strip (``K x 5`` with ``L <= 4 K``), while PyTorch's own
    weight gradient is faster for the small square ``5 x 5`` kernel.

    Args:
        input_shape (torch.Size): ``(N, C, H, W)``.
        kernel_size (tuple[int, int]): ``(kh, kw)`` after cropping.
    """
    height, width = input_shape[2:]
    kh, kw = kernel_size
    long_taps, short_taps = max(kh, kw), min(kh, kw)
    length = height if kh >= kw else width
    return long_taps >= 2 * short_taps and 4 * long_taps >= length


class DepthwiseConvSame(torch.autograd.Function):
    """A "same" depthwise conv whose backward consists of fast operations.

    ``grad_input`` is the correlation of ``grad_output`` with the flipped
    kernel (for stride 1 and symmetric padding the transposed convolution
    is a forward one); ``grad_weight`` comes from :func:`conv_grad_weight`
    (or as :data:`GRAD_WEIGHT_IMPL` says).
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
        padding = (kh // 2, kw // 2)
        grad_out = grad_out.contiguous(memory_format=_memory_format(x))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(
                grad_out, weight.flip(2, 3), padding=padding, groups=channels
            )
        if ctx.needs_input_grad[1]:
            if GRAD_WEIGHT_IMPL == 'conv':
                grad_weight = conv_grad_weight(x, grad_out, (kh, kw))
            elif GRAD_WEIGHT_IMPL == 'toeplitz' and use_toeplitz_grad_weight(
                x.shape, (kh, kw)
            ):
                grad_weight = toeplitz_grad_weight(x, grad_out, (kh, kw))
            else:
                grad_weight = torch.ops.aten.convolution_backward(
                    grad_out,
                    x,
                    weight,
                    None,
                    [1, 1],
                    list(padding),
                    [1, 1],
                    False,
                    [0, 0],
                    channels,
                    [False, True, False],
                )[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def is_tracing() -> bool:
    """Whether a tracer (``torch.jit.trace``, ``torch.export``,
    ``torch.compile``) is recording, so that only standard ops may run."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


@functools.cache
def onednn_op_available(name: str) -> bool:
    """Whether this PyTorch build has the oneDNN op ``torch.ops.mkldnn.<name>``
    (``'_convolution_pointwise'``, ``'_linear_pointwise'``)."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, name
    )


def depthwise_conv_same(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    conv_impl: str = 'auto',
    accumulate: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """A depthwise convolution with per-axis "same" padding.

    Args:
        x (Tensor): Shape ``(N, C, H, W)``.
        weight (Tensor): Shape ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
        bias (Tensor, optional): Shape ``(C,)``.
        conv_impl (str): One of :data:`CONV_IMPLS`.
        accumulate (Tensor, optional): Shape ``(N, C, H, W)``, added to the
            result. The ``'fast'`` path fuses the addition into the conv
            when no gradient is needed (oneDNN's sum post-op on fp32
            channels-last CPU maps, not while tracing (:func:`is_tracing`)
            so that exported graphs hold standard ops), saving a pass over
            the map.

    Returns:
        Tensor: Shape ``(N, C, H, W)``, in the memory format of ``x``.
    """
    impl = resolve_conv_impl(conv_impl, x.device)
    if impl != 'reference':
        # Taps outside the reachable window only multiply zero padding.
        weight = reachable_kernel(weight, *x.shape[2:])
    kh, kw = weight.shape[2:]
    padding = (kh // 2, kw // 2)
    on_cpu_fast = impl == 'fast' and x.device.type == 'cpu'
    if on_cpu_fast and torch.is_grad_enabled():
        out = DepthwiseConvSame.apply(x, weight, bias)
    elif (
        accumulate is not None
        and on_cpu_fast
        and not is_tracing()
        and x.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last)
        and accumulate.is_contiguous(memory_format=torch.channels_last)
        and accumulate.shape == x.shape
        and onednn_op_available('_convolution_pointwise')
    ):
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x,
            accumulate,
            weight,
            bias,
            list(padding),
            [1, 1],
            [1, 1],
            x.shape[1],
            'add',
            None,
            None,
            [],
            None,
        )
    else:
        out = F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])
    return out if accumulate is None else accumulate + out

"""Every private PyTorch op the backends call, behind one wrapper each.

These ops are not part of PyTorch's public API: their names and positional
signatures can change between releases. Nothing else in slak_mm calls them;
``tests/test_torch_private.py`` pins each signature against standard ops and
skips cleanly where an op is absent, and :func:`available` lets a backend
say it cannot run rather than fail on the first forward.
"""

import torch

# Wrapper name -> (namespace, op name) as found under ``torch.ops``.
_OPS = {
    'conv_add': ('mkldnn', '_convolution_pointwise'),
    'linear': ('mkldnn', '_linear_pointwise'),
    'gelu_backward': ('aten', 'gelu_backward'),
    'bf16_supported': ('mkldnn', '_is_mkldnn_bf16_supported'),
    'fp16_supported': ('mkldnn', '_is_mkldnn_fp16_supported'),
}


def _probe_available(name: str) -> bool:
    namespace, op = _OPS[name]
    if namespace == 'mkldnn' and not torch.backends.mkldnn.is_available():
        return False
    return hasattr(getattr(torch.ops, namespace), op)


# Probed once at import: the answers are constants of the build and the
# machine, and torch.compile reads a dict where it refuses to trace into
# torch.backends.
_AVAILABLE = {name: _probe_available(name) for name in _OPS}


def available(name: str) -> bool:
    """Whether this PyTorch build has the op behind wrapper ``name``.

    Args:
        name (str): A key of ``_OPS``: ``'conv_add'``, ``'linear'``,
            ``'gelu_backward'``, ``'bf16_supported'``, ``'fp16_supported'``.
    """
    if name not in _AVAILABLE:
        raise KeyError(
            f'unknown op wrapper {name!r}; choose from {sorted(_OPS)}'
        )
    return _AVAILABLE[name]


def conv_add(
    x: torch.Tensor,
    other: torch.Tensor,
    weight: torch.Tensor,
    bias,
    padding,
    groups: int,
) -> torch.Tensor:
    """``other + conv2d(x, weight, bias)`` in one oneDNN convolution.

    oneDNN's sum post-op adds ``other`` while the output is written (stride
    1, no dilation); ``other`` is read, not changed. All tensors share one
    dtype (fp32 or bf16, with fp32 accumulation).

    Args:
        x (Tensor): ``(N, C_in, H, W)``, channels-last.
        other (Tensor): ``(N, C_out, H, W)``, channels-last.
        weight (Tensor): ``(C_out, C_in / groups, kh, kw)``.
        bias (Tensor, optional): ``(C_out,)``.
        padding (Sequence[int]): ``(pad_h, pad_w)``.
        groups (int): Convolution groups.

    Returns:
        Tensor: ``(N, C_out, H, W)``, channels-last.
    """
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x,
        other,
        weight,
        bias,
        list(padding),
        [1, 1],  # stride
        [1, 1],  # dilation
        groups,
        'add',  # binary_attr
        None,  # alpha
        None,  # unary_attr
        [],  # unary_scalars
        None,  # unary_algorithm
    )


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias=None,
    gelu_approximate=None,
) -> torch.Tensor:
    """``x @ weight.T + bias`` on oneDNN's inner product, optionally with
    GELU fused.

    Args:
        x (Tensor): ``(M, K)``.
        weight (Tensor): ``(N, K)``, any strides.
        bias (Tensor, optional): ``(N,)``.
        gelu_approximate (str, optional): ``'none'`` (erf) or ``'tanh'``
            to apply :func:`torch.nn.functional.gelu` to the product.

    Returns:
        Tensor: ``(M, N)``, in the dtype of ``x`` (fp32 or bf16; bf16
        products accumulate in fp32).
    """
    if gelu_approximate is None:
        return torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, 'none', [], ''
        )
    return torch.ops.mkldnn._linear_pointwise(
        x, weight, bias, 'gelu', [], gelu_approximate
    )


def gelu_backward(
    grad_out: torch.Tensor, x: torch.Tensor, approximate: str = 'none'
) -> torch.Tensor:
    """Gradient of ``gelu(x, approximate)`` given the output gradient.

    Args:
        grad_out (Tensor): Any shape.
        x (Tensor): The GELU input, shape of ``grad_out``.
        approximate (str): ``'none'`` or ``'tanh'``.
    """
    return torch.ops.aten.gelu_backward(grad_out, x, approximate=approximate)


def _probe_onednn(dtype: torch.dtype) -> bool:
    if dtype == torch.float32:
        return torch.backends.mkldnn.is_available()
    if dtype == torch.bfloat16:
        return available('bf16_supported') and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    if dtype == torch.float16:
        return available('fp16_supported') and bool(
            torch.ops.mkldnn._is_mkldnn_fp16_supported()
        )
    return False


_ONEDNN_NATIVE = {
    dtype: _probe_onednn(dtype)
    for dtype in (torch.float32, torch.bfloat16, torch.float16)
}


def onednn_supports(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` convolutions and products natively
    on this CPU (bf16 needs AVX512-BF16/AMX or emulation oneDNN accepts,
    fp16 needs AVX512-FP16 or AVX-NE-CONVERT). ``ONEDNN_MAX_CPU_ISA`` set
    before the process starts caps what oneDNN reports."""
    return _ONEDNN_NATIVE.get(dtype, False)

"""SLaK's "same"-padded depthwise convolution as Triton kernels.

Nothing is compiled ahead of time: Triton ships with the CUDA builds of
PyTorch and compiles the kernels of :mod:`._triton_dwconv_kernels` on
first use. They cover every kernel shape SLaK uses (``K x s``, ``s x K``,
``s x s`` and, with ``decompose=False``, ``K x K``), stride 1, per-axis
"same" padding ``(kh // 2, kw // 2)``, on channels-last maps, in fp32,
bf16 and fp16 with fp32 accumulation:

- forward: a kernel at least :data:`STRIP_MIN_TAPS` long on an axis
  runs a sliding window along that axis (each input line loaded once for
  8 outputs); shorter kernels run a loop over the taps. Two kernels
  summed with a bias (the two BN-folded strips of an eval-mode
  large-kernel module) run two sliding windows, the second adding the
  first's fp32 sum, when either is that long, else one tap-loop pass;
- input gradient: the forward kernel with the flipped weights (for stride
  1 and symmetric padding the transposed convolution is a forward one);
- weight gradient: a reduction over the batch and the map, per tap.

Kernels longer than ``2L - 1`` along an axis of length ``L`` are cropped to
their centre ``2L - 1`` taps first: the other taps only ever multiply zero
padding (the rule of the CPU path). Gradients of the cropped-off taps are
zero, as autograd gives them through the crop.

On CUDA tensors the compiled kernels run, with tile sizes autotuned on
first use per shape class: kernel sizes, padded channels, dtypes and the
map's size class (:func:`size_class`), not per exact shape or batch. On
CPU tensors they run under Triton's interpreter, which only tests use:
set ``TRITON_INTERPRET=1`` in the environment (a CPU call without it
raises).

Entry points, all on NCHW-logical tensors (channels-last memory avoids a
layout copy):

- :func:`depthwise_conv_same_triton` ``(x, weight, bias=None)``: one conv,
  differentiable (the custom op :func:`triton_depthwise_conv_same`,
  ``slak_mm::triton_depthwise_conv_same``);
- :func:`depthwise_conv_pair_same_triton` ``(x, weight1, weight2,
  bias=None)``: two convs summed (plus bias) without autograd when no
  gradient is needed (``slak_mm::triton_depthwise_conv_pair_same``), two
  differentiable convs otherwise;
- :func:`depthwise_conv_branches_triton` ``(x, weights)``: bias-free
  convs of one input, one output each, differentiable, reading one padded
  copy of ``x`` (``slak_mm::triton_depthwise_conv_branches``, backward
  ``..._branches_backward``: each output gradient padded once for both of
  its gradients, the training-mode branches of a large-kernel module);
- :func:`available` ``(device=None)``: whether they can run.

The kernels are custom ops (``torch.library.custom_op``) with fake
implementations and registered autograd (the backward calls the
forward op for the input gradient and
``slak_mm::triton_depthwise_conv_weight_grad``), so ``torch.compile``
keeps them in its graph as opaque calls.

This module imports without Triton; :func:`available` is then ``False``.
"""

import contextlib
import dataclasses
import functools
import importlib
import os
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .same_padding import reachable_kernel

try:
    import triton
except ImportError:  # CPU-only installs of PyTorch come without Triton.
    triton = None

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Tiles used under the interpreter (tests): small enough that the test
# maps span several tiles, so tile borders are exercised.
INTERPRETER_BLOCKS = dict(BLOCK_H=4, BLOCK_W=8, BLOCK_C=8)
INTERPRETER_WEIGHT_GRAD_BLOCKS = dict(BLOCK_X=4, BLOCK_C=8)

# Candidate tiles for the compiled kernels; ``triton.autotune`` times them
# once per key and keeps the fastest. Few on purpose: each one is a compile.
_FORWARD_CONFIGS = (
    dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=32, num_warps=4),
    dict(BLOCK_H=4, BLOCK_W=16, BLOCK_C=32, num_warps=4),
    dict(BLOCK_H=8, BLOCK_W=16, BLOCK_C=32, num_warps=4),
    dict(BLOCK_H=16, BLOCK_W=16, BLOCK_C=16, num_warps=8),
    dict(BLOCK_H=8, BLOCK_W=8, BLOCK_C=64, num_warps=8),
)
# Weight gradient: BLOCK_X positions across x BLOCK_C channels, 8 per
# thread (16 per thread spills on sm_90).
_WEIGHT_GRAD_CONFIGS = (
    dict(BLOCK_X=16, BLOCK_C=64, num_warps=4),
    dict(BLOCK_X=32, BLOCK_C=64, num_warps=8),
    dict(BLOCK_X=8, BLOCK_C=64, num_warps=2),
    dict(BLOCK_X=16, BLOCK_C=32, num_warps=2),
)
# Tuned once per shape class, not per shape: kernel sizes, padded
# channels and the map's size class (H and W rounded up to powers of two;
# the batch is left out), plus the tensors' dtypes that Triton adds.
# Multi-scale detection resizes nearly every batch to a new shape, and
# timing every candidate takes seconds per key.
_FORWARD_KEY = ['TUNE_H', 'TUNE_W', 'CP', 'KH1', 'KW1', 'KH2', 'KW2']
_WEIGHT_GRAD_KEY = ['TUNE_H', 'TUNE_W', 'CP', 'KH', 'KW']
# Channels are zero-padded to a multiple of this (every BLOCK_C divides it).
CHANNEL_ALIGN = 64

# Single convs at least this long along one axis take the sliding-window
# kernel (dwconv_strip_forward_kernel): 8 outputs along that axis per
# program, each input line loaded and widened once for all 8. Its window
# wastes 7 / (K + 7) of its multiply-adds on zero taps, so short kernels
# (SLaK's 5 x 5) stay on the tap-loop kernel.
STRIP_MIN_TAPS = 9
INTERPRETER_STRIP_BLOCKS = dict(BLOCK_X=8, BLOCK_C=8)
_STRIP_CONFIGS = (
    dict(BLOCK_X=16, BLOCK_C=64, num_warps=2),
    dict(BLOCK_X=16, BLOCK_C=64, num_warps=4),
    dict(BLOCK_X=32, BLOCK_C=64, num_warps=4),
    dict(BLOCK_X=16, BLOCK_C=32, num_warps=2),
)
_STRIP_KEY = ['TUNE_H', 'TUNE_W', 'CP', 'KH', 'KW']

# The weight gradient is reduced in two steps: one program per run of
# images, group of columns of positions, block of taps and channel block
# writes per-tap partial sums, which torch then adds up. Runs are made
# short enough to give every SM a few programs, within a cap on the
# partial buffer: it holds at most _MAX_PARTIAL_BYTES, or one row (one
# split's taps x CP fp32 sums) when a single row is larger.
_PROGRAMS_PER_SM = 4
_NOMINAL_BLOCK_C = 32
_MAX_PARTIAL_BYTES = 128 * 2**20
# Multiprocessors assumed by plan_bytes when none is named (H100 and H200
# SXM both have 132).
_DEFAULT_MULTIPROCESSORS = 132
# Programs wanted under the interpreter (tests): enough for one image per
# run and one tile per program unless the cap groups them.
_INTERPRETER_PROGRAMS = 2**20


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels may run on CPU)."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def available(device: Union[str, torch.device, None] = None) -> bool:
    """Whether the Triton kernels can run.

    Args:
        device (str | torch.device, optional): ``'cuda'`` needs Triton and
            a CUDA device; ``'cpu'`` needs Triton and ``TRITON_INTERPRET=1``
            (the interpreter, for tests). ``None``: either of the two.
    """
    if triton is None:
        return False
    if device is None:
        return torch.cuda.is_available() or interpreter_enabled()
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.is_available()
    if device.type == 'cpu':
        return interpreter_enabled()
    return False


@contextlib.contextmanager
def _interpret_env(interpret: bool):
    """Sets ``TRITON_INTERPRET`` while ``triton.jit`` decorates: Triton
    decides there whether a kernel is compiled or interpreted."""
    previous = os.environ.get('TRITON_INTERPRET')
    os.environ['TRITON_INTERPRET'] = '1' if interpret else '0'
    try:
        yield
    finally:
        if previous is None:
            del os.environ['TRITON_INTERPRET']
        else:
            os.environ['TRITON_INTERPRET'] = previous


def _autotune_configs(configs):
    return [
        triton.Config(
            {k: v for k, v in cfg.items() if k != 'num_warps'},
            num_warps=cfg['num_warps'],
        )
        for cfg in configs
    ]


def _import_code_generator() -> None:
    """Imports Triton's code generator so that kernels can compile after
    Triton was first imported under ``TRITON_INTERPRET=1``.

    Triton's library helpers (``tl.sum``, ...) are then interpreted
    functions, and Triton 3.8's code generator imports its ``gluon``
    package, which wraps them and asserts that they are compiled ones
    unless the interpreter is on. Imported with the interpreter on, it
    wraps them without asserting; the kernels here call none of them.
    """
    from triton.runtime.jit import JITFunction

    if isinstance(triton.language.standard.sum, JITFunction):
        return  # Triton was first imported for compiling: nothing to do.
    with _interpret_env(True):
        importlib.import_module('triton.compiler.code_generator')


@functools.cache
def _kernels(interpret: bool):
    """Returns ``(forward, weight_grad, strip_forward)``, built on first
    use.

    Built lazily so that importing this module never decides between the
    compiled and the interpreted kernels: CUDA tensors get compiled,
    autotuned kernels, CPU tensors interpreted ones with fixed tiles.
    """
    from . import _triton_dwconv_kernels as kernels

    with _interpret_env(interpret):
        if interpret:
            return (
                triton.jit(kernels.dwconv_forward_kernel),
                triton.jit(kernels.dwconv_weight_grad_kernel),
                triton.jit(kernels.dwconv_strip_forward_kernel),
            )
        _import_code_generator()
        # Shapes vary per stage and input size: do not compile one variant
        # per divisibility of every integer argument. CP stays specialised
        # (always a multiple of 16): it tells Triton that channel rows are
        # aligned, so that loads are vectorised.
        forward = triton.jit(
            kernels.dwconv_forward_kernel,
            do_not_specialize=[
                'N',
                'H',
                'W',
                'C',
                'PH',
                'PW',
                'KH1',
                'KW1',
                'KH2',
                'KW2',
                'TUNE_H',
                'TUNE_W',
            ],
        )
        weight_grad = triton.jit(
            kernels.dwconv_weight_grad_kernel,
            do_not_specialize=[
                'N',
                'H',
                'W',
                'KH',
                'KW',
                'COLUMN_PROGRAMS',
                'IMAGES_PER_SPLIT',
                'TUNE_H',
                'TUNE_W',
            ],
        )
        strip_forward = triton.jit(
            kernels.dwconv_strip_forward_kernel,
            do_not_specialize=[
                'N', 'H', 'W', 'C', 'PH', 'PW', 'KH', 'KW', 'TUNE_H', 'TUNE_W'
            ],
        )  # fmt: skip
    forward = triton.autotune(
        configs=_autotune_configs(_FORWARD_CONFIGS), key=_FORWARD_KEY
    )(forward)
    weight_grad = triton.autotune(
        configs=_autotune_configs(_WEIGHT_GRAD_CONFIGS), key=_WEIGHT_GRAD_KEY
    )(weight_grad)
    strip_forward = triton.autotune(
        configs=_autotune_configs(_STRIP_CONFIGS), key=_STRIP_KEY
    )(strip_forward)
    return forward, weight_grad, strip_forward


def _use_interpreter(x: torch.Tensor) -> bool:
    """Chooses compiled (CUDA) or interpreted (CPU) kernels for ``x``."""
    if triton is None:
        raise RuntimeError(
            'the Triton depthwise conv needs the triton package, which is '
            'not installed (it comes with the CUDA builds of PyTorch)'
        )
    if x.device.type == 'cuda':
        return False
    if x.device.type == 'cpu':
        if not interpreter_enabled():
            raise RuntimeError(
                'the Triton depthwise conv runs on CUDA tensors; CPU '
                "tensors need Triton's interpreter (TRITON_INTERPRET=1), "
                'got a CPU tensor without it'
            )
        return True
    raise RuntimeError(
        f'the Triton depthwise conv runs on CUDA (or CPU under the '
        f'interpreter), got a tensor on {x.device}'
    )


def check_inputs(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    bias: Optional[torch.Tensor],
) -> None:
    """Raises a ValueError naming the problem if the kernels cannot take
    these tensors (see :func:`depthwise_conv_same_triton`)."""
    if x.dim() != 4:
        raise ValueError(f'x must be (N, C, H, W), got shape {tuple(x.shape)}')
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f'x must be one of {SUPPORTED_DTYPES}, got {x.dtype}')
    channels = x.shape[1]
    for weight in weights:
        if (
            weight.dim() != 4
            or weight.shape[0] != channels
            or weight.shape[1] != 1
        ):
            raise ValueError(
                f'weight must be (C, 1, kh, kw) with C={channels} (the '
                f'channels of x), got shape {tuple(weight.shape)}'
            )
        if weight.shape[2] % 2 == 0 or weight.shape[3] % 2 == 0:
            raise ValueError(
                'kernel sizes must be odd for "same" padding, got '
                f'{tuple(weight.shape[2:])}'
            )
        if weight.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f'weight must be one of {SUPPORTED_DTYPES}, got {weight.dtype}'
            )
        if weight.device != x.device:
            raise ValueError(f'weight is on {weight.device}, x on {x.device}')
    if bias is not None:
        if bias.shape != (channels,):
            raise ValueError(
                f'bias must be ({channels},), got {tuple(bias.shape)}'
            )
        if bias.device != x.device:
            raise ValueError(f'bias is on {bias.device}, x on {x.device}')


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` contiguous view of an NCHW-logical tensor (free for
    channels-last memory, one copy otherwise)."""
    return x.permute(0, 2, 3, 1).contiguous()


def padded_channels(channels: int) -> int:
    """Channels rounded up to :data:`CHANNEL_ALIGN`."""
    return -(-channels // CHANNEL_ALIGN) * CHANNEL_ALIGN


def _taps_last(weight: torch.Tensor, padded: int) -> torch.Tensor:
    """``(C, 1, kh, kw)`` -> ``(kh, kw, CP)`` contiguous, zero-padded."""
    taps = weight[:, 0].permute(1, 2, 0)
    return F.pad(taps, (0, padded - weight.shape[0])).contiguous()


def _device_guard(x: torch.Tensor):
    if x.device.type == 'cuda':
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def pad_map(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """The zero-padded copy of a map that the kernels read.

    Args:
        x (Tensor): ``(N, H, W, C)`` contiguous.
        pad_h (int): Rows of zeros above and below the map.
        pad_w (int): Columns of zeros left and right of the map.

    Returns:
        Tensor: ``(N, H + 2 pad_h, W + 2 pad_w, CP)`` contiguous, channels
        zero-padded to ``CP = padded_channels(C)``.
    """
    extra = padded_channels(x.shape[3]) - x.shape[3]
    return F.pad(x, (0, extra, pad_w, pad_w, pad_h, pad_h))


def conv_forward_nhwc(
    x: torch.Tensor,
    weights: List[torch.Tensor],
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sum of "same" depthwise convs of ``x`` with 1 or 2 kernels, + bias.

    Args:
        x (Tensor): ``(N, H, W, C)`` contiguous.
        weights (list[Tensor]): One or two kernels ``(C, 1, kh, kw)``, odd
            sizes, already cropped to the reachable window.
        bias (Tensor, optional): ``(C,)``.

    Returns:
        Tensor: ``(N, H, W, C)`` contiguous, dtype of ``x``.
    """
    _use_interpreter(x)
    if x.numel() == 0:
        return torch.empty_like(x)
    pad_h = max(w.shape[2] for w in weights) // 2
    pad_w = max(w.shape[3] for w in weights) // 2
    # The "same" zero padding and the channel padding, in one copy.
    return conv_forward_padded(
        pad_map(x, pad_h, pad_w), x.shape, weights, bias
    )


def conv_forward_padded(
    x_padded: torch.Tensor,
    shape: Sequence[int],
    weights: List[torch.Tensor],
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """:func:`conv_forward_nhwc` of a map already padded by
    :func:`pad_map`, by at least each kernel's half on each axis (so that
    one copy can serve several convs).

    Args:
        x_padded (Tensor): ``(N, H + 2 PH, W + 2 PW, CP)`` contiguous,
            ``PH >= kh // 2`` and ``PW >= kw // 2`` for every kernel.
        shape (Sequence[int]): The map's ``(N, H, W, C)``.
        weights (list[Tensor]): One or two kernels ``(C, 1, kh, kw)``, odd
            sizes, already cropped to the reachable window.
        bias (Tensor, optional): ``(C,)``.

    Returns:
        Tensor: ``(N, H, W, C)`` contiguous, dtype of ``x_padded``.
    """
    interpret = _use_interpreter(x_padded)
    forward, _, strip_forward = _kernels(interpret)
    batch, height, width, channels = shape
    out = x_padded.new_empty(shape)
    if out.numel() == 0:
        return out
    halo = (
        (x_padded.shape[1] - height) // 2,
        (x_padded.shape[2] - width) // 2,
    )
    if uses_strip_kernel([w.shape[2:] for w in weights]):
        if len(weights) == 1:
            return _strip_forward(
                strip_forward, interpret, x_padded, shape, halo, weights[0],
                bias, out,
            )  # fmt: skip
        # The pair: the first strip (+ bias) into an fp32 sum, then the
        # second strip added to it on its way out, so that the sum of both
        # is rounded to the output's dtype once, as in the one-pass kernel.
        # The sum has the padded channels (zeros) too: aligned rows that
        # cover every channel block of the second pass.
        padded_shape = (batch, height, width, x_padded.shape[3])
        first = x_padded.new_empty(padded_shape, dtype=torch.float32)
        _strip_forward(
            strip_forward, interpret, x_padded, padded_shape, halo,
            weights[0], bias, first,
        )  # fmt: skip
        return _strip_forward(
            strip_forward, interpret, x_padded, shape, halo, weights[1],
            None, out, prior=first,
        )  # fmt: skip
    scalars = forward_scalars(shape, [w.shape[2:] for w in weights], halo)
    padded = scalars['CP']
    first = _taps_last(weights[0], padded)
    second = _taps_last(weights[1], padded) if len(weights) > 1 else first
    if bias is not None:
        bias = F.pad(bias, (0, padded - channels))
    args = (
        x_padded,
        first,
        second,
        bias if bias is not None else first,
        out,
        *scalars.values(),
    )
    flags = dict(HAS_SECOND=len(weights) > 1, HAS_BIAS=bias is not None)

    def grid(meta):
        tiles = triton.cdiv(height, meta['BLOCK_H']) * triton.cdiv(
            width, meta['BLOCK_W']
        )
        return (batch * tiles, triton.cdiv(channels, meta['BLOCK_C']))

    with _device_guard(x_padded):
        if interpret:
            forward[grid(INTERPRETER_BLOCKS)](
                *args, **flags, **INTERPRETER_BLOCKS
            )
        else:
            forward[grid](*args, **flags)
    return out


def uses_strip_kernel(kernels: Sequence[Sequence[int]]) -> bool:
    """Whether a forward call with these (cropped) ``(kh, kw)`` kernels
    runs the sliding-window kernel, one launch per kernel: when one of
    them is at least :data:`STRIP_MIN_TAPS` long along an axis. Otherwise
    (all short) one tap-loop pass computes them all."""
    return max(max(kernel) for kernel in kernels) >= STRIP_MIN_TAPS


def strip_scalars(
    shape: Sequence[int],
    kernel: Sequence[int],
    halo: Optional[Sequence[int]] = None,
) -> Dict[str, int]:
    """The integer arguments of :func:`dwconv_strip_forward_kernel`, by
    name, in the kernel's order (``shape``: the input's ``(N, H, W, C)``,
    ``kernel``: the cropped ``(kh, kw)``, ``halo``: the input's padding
    ``(PH, PW)``, by default the kernel's halves)."""
    scalars = forward_scalars(shape, [kernel], halo)
    for name in ('KH2', 'KW2'):
        del scalars[name]
    scalars['KH'], scalars['KW'] = scalars.pop('KH1'), scalars.pop('KW1')
    return {name: scalars[name] for name in (
        'N', 'H', 'W', 'C', 'CP', 'PH', 'PW', 'KH', 'KW', 'TUNE_H', 'TUNE_W'
    )}  # fmt: skip


def _strip_forward(
    kernel,
    interpret: bool,
    x_padded: torch.Tensor,
    shape: Sequence[int],
    halo: Sequence[int],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    out: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """:func:`conv_forward_padded` of one kernel on the sliding-window
    kernel, written into ``out`` (same arguments, the map non-empty;
    ``halo``: the padding ``(PH, PW)`` of ``x_padded``).

    Args:
        out (Tensor): ``shape``, contiguous, any supported dtype (the
            pair's first pass writes fp32, with ``C = CP``).
        prior (Tensor, optional): ``(N, H, W, CP)`` contiguous fp32, not
            ``out``: added to the conv (the pair's first strip).

    Returns:
        Tensor: ``out``.
    """
    batch, height, width, channels = shape
    kh, kw = weight.shape[2:]
    scalars = strip_scalars(shape, (kh, kw), halo)
    padded = scalars['CP']
    taps = _taps_last(weight, padded)
    if bias is not None:
        bias = F.pad(bias, (0, padded - bias.shape[0]))
    along_w = kw > kh
    length, across = (width, height) if along_w else (height, width)
    args = (
        x_padded,
        taps,
        bias if bias is not None else taps,
        out,
        prior if prior is not None else out,
    )
    flags = dict(
        ALONG_W=along_w,
        HAS_BIAS=bias is not None,
        ACCUMULATE=prior is not None,
    )

    def grid(meta):
        tiles = triton.cdiv(length, 8) * triton.cdiv(across, meta['BLOCK_X'])
        return (batch * tiles, triton.cdiv(channels, meta['BLOCK_C']))

    with _device_guard(x_padded):
        if interpret:
            blocks = INTERPRETER_STRIP_BLOCKS
            kernel[grid(blocks)](*args, *scalars.values(), **flags, **blocks)
        else:
            kernel[grid](*args, *scalars.values(), **flags)
    return out


@functools.cache
def _multiprocessor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def size_class(length: int) -> int:
    """The autotuning class of a map side: ``length`` rounded up to a
    power of two (tile choices differ with the map's scale, not with its
    exact size)."""
    return 1 << max(0, length - 1).bit_length()


def forward_scalars(
    shape: Sequence[int],
    kernels: Sequence[Sequence[int]],
    halo: Optional[Sequence[int]] = None,
) -> Dict[str, int]:
    """The integer arguments of :func:`dwconv_forward_kernel`, by name.

    Args:
        shape (Sequence[int]): The input's ``(N, H, W, C)``.
        kernels (Sequence[Sequence[int]]): One or two ``(kh, kw)``,
            already cropped (a single kernel stands in for both).
        halo (Sequence[int], optional): The padded input's ``(PH, PW)``
            (at least the kernels' halves); by default the largest halves.

    Returns:
        dict: ``N`` ... ``TUNE_W`` in the kernel's order.
    """
    batch, height, width, channels = shape
    first, second = kernels[0], kernels[-1]
    if halo is None:
        halo = (
            max(kh for kh, _ in kernels) // 2,
            max(kw for _, kw in kernels) // 2,
        )
    return dict(
        N=batch,
        H=height,
        W=width,
        C=channels,
        CP=padded_channels(channels),
        PH=halo[0],
        PW=halo[1],
        KH1=first[0],
        KW1=first[1],
        KH2=second[0],
        KW2=second[1],
        TUNE_H=size_class(height),
        TUNE_W=size_class(width),
    )


def weight_grad_scalars(
    shape: Sequence[int], kh: int, kw: int, plan: 'WeightGradPlan'
) -> Dict[str, int]:
    """The integer arguments of :func:`dwconv_weight_grad_kernel`, by
    name, in the kernel's order (``shape``: the input's ``(N, H, W,
    C)``)."""
    batch, height, width, channels = shape
    return dict(
        N=batch,
        H=height,
        W=width,
        CP=padded_channels(channels),
        KH=kh,
        KW=kw,
        COLUMN_PROGRAMS=plan.column_programs,
        IMAGES_PER_SPLIT=plan.images_per_split,
        TUNE_H=size_class(height),
        TUNE_W=size_class(width),
    )


def tuning_key(scalars: Dict[str, int], names: Sequence[str]) -> tuple:
    """The autotuner's key of a call (less the dtypes Triton appends)."""
    return tuple(scalars[name] for name in names)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _weight_grad_along_w(kh: int, kw: int) -> bool:
    """Whether the weight gradient walks along W (kernels longer across
    than down), else along H."""
    return kw > kh


def _weight_grad_columns(
    height: int, width: int, kh: int, kw: int, blocks: dict
) -> int:
    """Columns of ``BLOCK_X`` positions across the weight gradient's walk."""
    across = height if _weight_grad_along_w(kh, kw) else width
    return _cdiv(across, blocks['BLOCK_X'])


def weight_grad_tap_programs(kh: int, kw: int) -> int:
    """Weight-gradient programs per split and channel block: blocks of 8
    taps along the walk x taps across."""
    along, across = (kw, kh) if _weight_grad_along_w(kh, kw) else (kh, kw)
    return _cdiv(along, 8) * across


def _tile_candidates(configs) -> List[dict]:
    return [
        {k: v for k, v in cfg.items() if k.startswith('BLOCK_')}
        for cfg in configs
    ]


@dataclasses.dataclass(frozen=True)
class WeightGradPlan:
    """How a weight-gradient call splits its work: ``runs x
    column_programs`` splits, each owning one row of the partial buffer
    (written by its tap blocks' and channel blocks' programs).

    Attributes:
        column_programs (int): Splits per run of images; the columns of
            positions are dealt round-robin to them.
        images_per_split (int): Images per run (the last may be short).
        runs (int): Runs of images, ``cdiv(N, images_per_split)``.
        partial_bytes (int): The fp32 partial buffer, ``runs x
            column_programs x kh x kw x CP x 4``.
    """

    column_programs: int
    images_per_split: int
    runs: int
    partial_bytes: int


def plan_weight_grad(
    shape: Sequence[int],
    kh: int,
    kw: int,
    candidates: Sequence[dict],
    target_programs: int,
    max_partial_bytes: Optional[int] = None,
) -> WeightGradPlan:
    """Splits a weight-gradient call into programs within the buffer cap.

    One split per column of the coarsest candidate tiling at most (finer
    tilings give each split several columns, so that every candidate
    writes the same rows), fewer when the cap allows fewer rows; then as
    many runs of images as it takes to give ``target_programs`` programs
    (each split has ``cdiv(K_along, 8) x K_across`` tap programs and
    ``cdiv(C, 32)`` channel blocks), within the cap and the batch.

    Args:
        shape (Sequence[int]): The input's ``(N, H, W, C)``.
        kh (int): Kernel height.
        kw (int): Kernel width.
        candidates (Sequence[dict]): Candidate tiles (``BLOCK_X`` key).
        target_programs (int): Programs wanted in all (a few per SM).
        max_partial_bytes (int, optional): The cap on the partial buffer
            (default :data:`_MAX_PARTIAL_BYTES`); one row is always
            allowed.

    Returns:
        WeightGradPlan: All zeros for an empty input (nothing launched).
    """
    if max_partial_bytes is None:
        max_partial_bytes = _MAX_PARTIAL_BYTES
    batch, height, width, channels = shape
    if batch * height * width * channels == 0:
        return WeightGradPlan(0, 0, 0, 0)
    row_bytes = 4 * kh * kw * padded_channels(channels)
    max_rows = max(1, max_partial_bytes // row_bytes)
    coarsest = min(
        _weight_grad_columns(height, width, kh, kw, blocks)
        for blocks in candidates
    )
    column_programs = min(coarsest, max_rows)
    rows_wanted = _cdiv(
        target_programs,
        _cdiv(channels, _NOMINAL_BLOCK_C) * weight_grad_tap_programs(kh, kw),
    )
    runs = min(
        batch,
        max_rows // column_programs,
        _cdiv(rows_wanted, column_programs),
    )
    images_per_split = _cdiv(batch, runs)
    runs = _cdiv(batch, images_per_split)
    return WeightGradPlan(
        column_programs,
        images_per_split,
        runs,
        column_programs * runs * row_bytes,
    )


def plan_bytes(
    shape: Sequence[int],
    kernel: Sequence[int],
    dtype: torch.dtype = torch.bfloat16,
    multiprocessors: int = _DEFAULT_MULTIPROCESSORS,
    halo: Optional[Sequence[int]] = None,
) -> Dict[str, Dict[str, int]]:
    """Bytes live for each kernel call of one conv on the CUDA path, as
    a branch conv of a large-kernel module in training runs it
    (:func:`depthwise_conv_branches_triton`).

    Args:
        shape (Sequence[int]): The input's ``(N, C, H, W)``.
        kernel (Sequence[int]): ``(kh, kw)``, before cropping to the map.
        dtype (torch.dtype): The maps' dtype (bf16 under autocast).
        multiprocessors (int): SMs of the GPU (sizes the weight-gradient
            split).
        halo (Sequence[int], optional): The padding ``(PH, PW)`` of the
            forward's input copy, which the module's convs share: the
            largest halves of their cropped kernels. Defaults to this
            kernel's own.

    Returns:
        dict: For ``'forward'``, ``'input_grad'`` and ``'weight_grad'``,
        a dict from allocation to bytes, and ``'total'``:
        ``'padded_input'`` (the input padded by ``halo`` and along
        channels: one copy per module step, shared by its forwards),
        ``'padded_grad'`` (the output gradient padded by the kernel's
        halves: one per conv, made for the input gradient and read by the
        weight gradient), ``'input_rows'`` (the input padded along
        channels only: one per module step, shared by its weight
        gradients; 0 when C is a multiple of 64), the taps-last weights
        (fp32), the weight gradient's partial buffer and the results
        (``'output'``: the conv's output or the input gradient, in
        ``dtype``; ``'weight_grad'``: fp32 sums).
    """
    batch, channels, height, width = shape
    crop = reachable_kernel(torch.empty(0, 1, *kernel), height, width)
    kh, kw = crop.shape[2:]
    if halo is None:
        halo = (kh // 2, kw // 2)
    padded = padded_channels(channels)
    item = torch.empty(0, dtype=dtype).element_size()
    padded_input = (
        batch * (height + 2 * halo[0]) * (width + 2 * halo[1]) * padded * item
    )
    padded_grad = batch * (height + kh - 1) * (width + kw - 1) * padded * item
    taps = 4 * kh * kw * padded
    output = batch * height * width * channels * item
    plans = dict(
        forward=dict(padded_input=padded_input, weights=taps, output=output),
        input_grad=dict(padded_grad=padded_grad, weights=taps, output=output),
    )
    if batch * height * width * channels == 0:
        plans['weight_grad'] = dict(weight_grad=4 * kh * kw * channels)
    else:
        plan = plan_weight_grad(
            (batch, height, width, channels),
            kh,
            kw,
            _tile_candidates(_WEIGHT_GRAD_CONFIGS),
            _PROGRAMS_PER_SM * multiprocessors,
        )
        input_rows = batch * height * width * padded * item
        plans['weight_grad'] = dict(
            padded_grad=padded_grad,
            input_rows=input_rows if padded != channels else 0,
            partial=plan.partial_bytes,
            weight_grad=4 * kh * kw * channels,
        )
    for plan in plans.values():
        plan['total'] = sum(plan.values())
    return plans


def plan_pair_bytes(
    shape: Sequence[int],
    kernels: Sequence[Sequence[int]],
    dtype: torch.dtype = torch.bfloat16,
) -> Dict[str, int]:
    """Bytes live for one eval pair call
    (:func:`depthwise_conv_pair_same_triton` without gradients: a
    large-kernel module's two folded strips, or its deploy form).

    Args:
        shape (Sequence[int]): The input's ``(N, C, H, W)``.
        kernels (Sequence[Sequence[int]]): The two ``(kh, kw)``, before
            cropping to the map.
        dtype (torch.dtype): The maps' dtype (bf16 under autocast).

    Returns:
        dict: Allocation to bytes, and ``'total'``: ``'padded_input'``
        (the input padded by the larger halves of the two cropped kernels
        and along channels), ``'weights'`` (both kernels taps-last in
        fp32), ``'sum'`` (the first sliding window's fp32 sum over the
        padded channels, read by the second; 0 when both kernels are
        short and one tap-loop pass computes the pair) and ``'output'``.
    """
    batch, channels, height, width = shape
    cropped = [
        reachable_kernel(torch.empty(0, 1, *kernel), height, width).shape[2:]
        for kernel in kernels
    ]
    halo_h = max(kh for kh, _ in cropped) // 2
    halo_w = max(kw for _, kw in cropped) // 2
    padded = padded_channels(channels)
    item = torch.empty(0, dtype=dtype).element_size()
    positions = batch * height * width
    plan = dict(
        padded_input=batch
        * (height + 2 * halo_h)
        * (width + 2 * halo_w)
        * padded
        * item,
        weights=sum(4 * kh * kw * padded for kh, kw in cropped),
        sum=4 * positions * padded if uses_strip_kernel(cropped) else 0,
        output=positions * channels * item,
    )
    if positions * channels == 0:
        plan = dict.fromkeys(plan, 0)
    plan['total'] = sum(plan.values())
    return plan


def conv_weight_grad_nhwc(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kh: int,
    kw: int,
    channels: Optional[int] = None,
) -> torch.Tensor:
    """Weight gradient of a "same" depthwise conv with a ``kh x kw`` kernel.

    Args:
        x (Tensor): Input, ``(N, H, W, C)`` contiguous; with ``channels``,
            already padded by :func:`pad_map` with ``(kh // 2, kw // 2)``.
        grad_out (Tensor): Output gradient, ``(N, H, W, C)`` contiguous;
            with ``channels``, already padded along channels, ``(N, H, W,
            CP)``.
        kh (int): Kernel height (odd, ``<= 2H - 1``).
        kw (int): Kernel width (odd, ``<= 2W - 1``).
        channels (int, optional): C, given when the maps come padded.

    Returns:
        Tensor: ``(C, 1, kh, kw)`` in fp32.
    """
    interpret = _use_interpreter(x)
    _, weight_grad, _ = _kernels(interpret)
    come_padded = channels is not None
    if channels is None:
        channels = x.shape[3]
    batch, height, width = grad_out.shape[:3]
    shape = (batch, height, width, channels)
    if batch * height * width * channels == 0:
        # An empty batch: nothing to sum, and no launch.
        return x.new_zeros(channels, 1, kh, kw, dtype=torch.float32)
    padded = padded_channels(channels)
    # The tiling is the autotuner's choice, and the autotuner runs every
    # candidate on the same buffer before the winner: the plan (grid and
    # rows written) does not depend on it.
    if interpret:
        candidates = [INTERPRETER_WEIGHT_GRAD_BLOCKS]
        target_programs = _INTERPRETER_PROGRAMS
    else:
        candidates = _tile_candidates(_WEIGHT_GRAD_CONFIGS)
        index = x.device.index if x.device.index is not None else 0
        target_programs = _PROGRAMS_PER_SM * _multiprocessor_count(index)
    plan = plan_weight_grad(shape, kh, kw, candidates, target_programs)
    splits = plan.column_programs * plan.runs
    tap_programs = weight_grad_tap_programs(kh, kw)
    flags = dict(ALONG_W=_weight_grad_along_w(kh, kw))
    extra = padded - channels
    if come_padded:
        x_padded, grad_padded = x, grad_out
    else:
        x_padded = pad_map(x, kh // 2, kw // 2)
        grad_padded = pad_map(grad_out, 0, 0) if extra else grad_out
    # Every launched program writes all of its row; channels past the
    # grid's last block are left unwritten and not read.
    partial = torch.empty(
        splits,
        kh * kw,
        padded,
        device=x.device,
        dtype=torch.float32,
    )
    args = (
        x_padded,
        grad_padded,
        partial,
        *weight_grad_scalars(shape, kh, kw, plan).values(),
    )

    def grid(meta):
        return (
            splits * tap_programs,
            triton.cdiv(channels, meta['BLOCK_C']),
        )

    with _device_guard(x):
        if interpret:
            blocks = INTERPRETER_WEIGHT_GRAD_BLOCKS
            weight_grad[grid(blocks)](*args, **flags, **blocks)
        else:
            weight_grad[grid](*args, **flags)
    grad = partial[:, :, :channels].sum(0)
    return grad.reshape(kh, kw, channels).permute(2, 0, 1).unsqueeze(1)


# The kernels are custom ops (fake implementations, registered autograd) so
# that torch.compile keeps them in its graph, opaque, instead of tracing
# into Triton's launcher; their backwards call custom ops too.


def _channels_last_like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An empty ``(N, C, H, W)`` tensor with the strides the kernels' outputs
    have (an ``(N, H, W, C)`` contiguous buffer viewed as NCHW)."""
    return torch.empty_permuted(
        x.shape, (0, 2, 3, 1), dtype=dtype, device=x.device
    )


@torch.library.custom_op(
    'slak_mm::triton_depthwise_conv_same', mutates_args=()
)
def triton_depthwise_conv_same(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """A "same" depthwise conv on the Triton kernels, with its backward.

    ``x`` ``(N, C, H, W)`` (channels-last memory avoids copies), ``weight``
    ``(C, 1, kh, kw)`` already cropped to the reachable window, ``bias``
    ``(C,)`` or None; no autocast inside (see
    :func:`depthwise_conv_same_triton`). Returns ``(N, C, H, W)`` in
    channels-last memory and the dtype of ``x``. Gradients come back in
    the dtypes of their inputs, accumulated in fp32.
    """
    out = conv_forward_nhwc(_nhwc(x), [weight], bias)
    return out.permute(0, 3, 1, 2)


@triton_depthwise_conv_same.register_fake
def _(x, weight, bias):
    return _channels_last_like(x, x.dtype)


@torch.library.custom_op(
    'slak_mm::triton_depthwise_conv_weight_grad', mutates_args=()
)
def triton_depthwise_conv_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, kh: int, kw: int
) -> torch.Tensor:
    """The weight gradient of :func:`triton_depthwise_conv_same` with a
    ``kh x kw`` kernel: ``(C, 1, kh, kw)`` contiguous, fp32 (``x`` and
    ``grad_out`` ``(N, C, H, W)`` of one dtype)."""
    grad = conv_weight_grad_nhwc(_nhwc(x), _nhwc(grad_out), kh, kw)
    return grad.contiguous()


@triton_depthwise_conv_weight_grad.register_fake
def _(x, grad_out, kh, kw):
    return x.new_empty(x.shape[1], 1, kh, kw, dtype=torch.float32)


def _triton_conv_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _triton_conv_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    # Gradients arriving in another dtype (e.g. fp32 into a bf16 output)
    # are read in the input's dtype, as cuDNN would.
    grad_out = grad_out.to(x.dtype)
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        # For stride 1 and symmetric padding the transposed conv is the
        # forward one with the flipped kernel.
        grad_x = triton_depthwise_conv_same(grad_out, weight.flip(2, 3), None)
    if ctx.needs_input_grad[1]:
        kh, kw = weight.shape[2:]
        grad_weight = triton_depthwise_conv_weight_grad(
            x, grad_out, kh, kw
        ).to(weight.dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
        grad_bias = (
            grad_out.permute(0, 2, 3, 1)
            .sum((0, 1, 2), dtype=torch.float32)
            .to(ctx.bias_dtype)
        )
    return grad_x, grad_weight, grad_bias


triton_depthwise_conv_same.register_autograd(
    _triton_conv_backward, setup_context=_triton_conv_setup
)


@torch.library.custom_op(
    'slak_mm::triton_depthwise_conv_branches', mutates_args=()
)
def triton_depthwise_conv_branches(
    x: torch.Tensor, weights: List[torch.Tensor]
) -> List[torch.Tensor]:
    """Bias-free "same" depthwise convs of one input, one output each, all
    reading one padded copy of ``x`` (padded by the largest halves).

    ``x`` ``(N, C, H, W)``, ``weights`` ``(C, 1, kh, kw)`` each, already
    cropped; no autocast inside (see
    :func:`depthwise_conv_branches_triton`). Returns one ``(N, C, H, W)``
    per weight, channels-last memory, dtype of ``x``.
    """
    _use_interpreter(x)
    x = _nhwc(x)
    if x.numel() == 0:
        return [torch.empty_like(x).permute(0, 3, 1, 2) for _ in weights]
    x_padded = pad_map(
        x,
        max(w.shape[2] for w in weights) // 2,
        max(w.shape[3] for w in weights) // 2,
    )
    return [
        conv_forward_padded(x_padded, x.shape, [weight]).permute(0, 3, 1, 2)
        for weight in weights
    ]


@triton_depthwise_conv_branches.register_fake
def _(x, weights):
    return [_channels_last_like(x, x.dtype) for _ in weights]


@torch.library.custom_op(
    'slak_mm::triton_depthwise_conv_branches_backward', mutates_args=()
)
def triton_depthwise_conv_branches_backward(
    x: torch.Tensor,
    grad_outs: List[torch.Tensor],
    weights: List[torch.Tensor],
    input_grad: bool,
    weight_grad: bool,
) -> List[torch.Tensor]:
    """The gradients of :func:`triton_depthwise_conv_branches`.

    Each output gradient is padded once, by its kernel's halves, and that
    copy serves both of its gradients: the input gradient is the forward
    kernel with the flipped weights on it, and the weight gradient is the
    weight-gradient kernel with the roles of the maps swapped (the padded
    output gradient read tap by tap, the input padded along channels only,
    one copy for all the weights), which gives the taps flipped.

    Args:
        x (Tensor): The input, ``(N, C, H, W)``.
        grad_outs (list[Tensor]): One ``(N, C, H, W)`` per weight, dtype
            of ``x``.
        weights (list[Tensor]): ``(C, 1, kh, kw)`` each, already cropped.
        input_grad (bool): Compute the input gradient.
        weight_grad (bool): Compute the weight gradients.

    Returns:
        list[Tensor]: The input gradient ``(N, C, H, W)`` (channels-last
        memory, dtype of ``x``) if ``input_grad``, then, if
        ``weight_grad``, one ``(C, 1, kh, kw)`` fp32 per weight.
    """
    _use_interpreter(x)
    x = _nhwc(x)
    shape = x.shape
    channels = shape[3]
    grad_x = torch.zeros_like(x) if x.numel() == 0 else None
    x_rows = None
    weight_grads = []
    for grad_out, weight in zip(grad_outs, weights):
        kh, kw = weight.shape[2:]
        grad_padded = pad_map(_nhwc(grad_out), kh // 2, kw // 2)
        if input_grad and grad_x is None:
            grad_x = conv_forward_padded(
                grad_padded, shape, [weight.flip(2, 3)]
            )
        elif input_grad:
            grad_x += conv_forward_padded(
                grad_padded, shape, [weight.flip(2, 3)]
            )
        if weight_grad:
            if x_rows is None:
                aligned = padded_channels(channels) == channels
                x_rows = x if aligned else pad_map(x, 0, 0)
            # sum x[p] * grad[p - tap] is the kernel's sum grad[p] *
            # x[p + tap] with the maps swapped: the taps come flipped.
            swapped = conv_weight_grad_nhwc(
                grad_padded, x_rows, kh, kw, channels=channels
            )
            weight_grads.append(swapped.flip(2, 3).contiguous())
        del grad_padded  # one padded gradient alive at a time
    results = [grad_x.permute(0, 3, 1, 2)] if input_grad else []
    return results + weight_grads


@triton_depthwise_conv_branches_backward.register_fake
def _(x, grad_outs, weights, input_grad, weight_grad):
    results = [_channels_last_like(x, x.dtype)] if input_grad else []
    if weight_grad:
        results += [
            x.new_empty(x.shape[1], 1, *w.shape[2:], dtype=torch.float32)
            for w in weights
        ]
    return results


def _branches_setup(ctx, inputs, output):
    x, weights = inputs
    ctx.save_for_backward(x, *weights)


def _branches_backward(ctx, grad_outs):
    x, *weights = ctx.saved_tensors
    input_grad = ctx.needs_input_grad[0]
    weight_grad = any(ctx.needs_input_grad[1])
    # Read in the input's dtype, as in the single conv's backward.
    grad_outs = [g.to(x.dtype) for g in grad_outs]
    grads = triton_depthwise_conv_branches_backward(
        x, grad_outs, weights, input_grad, weight_grad
    )
    grad_x = grads.pop(0) if input_grad else None
    if not weight_grad:
        return grad_x, [None] * len(weights)
    return grad_x, [
        grad.to(weight.dtype) for grad, weight in zip(grads, weights)
    ]


triton_depthwise_conv_branches.register_autograd(
    _branches_backward, setup_context=_branches_setup
)


@torch.library.custom_op(
    'slak_mm::triton_depthwise_conv_pair_same', mutates_args=()
)
def triton_depthwise_conv_pair_same(
    x: torch.Tensor,
    weight1: torch.Tensor,
    weight2: torch.Tensor,
    bias: Optional[torch.Tensor],
) -> torch.Tensor:
    """``conv(x, weight1) + conv(x, weight2) + bias`` without gradients
    (weights already cropped, no autocast inside; see
    :func:`depthwise_conv_pair_same_triton`): a sliding window per kernel
    when either is at least :data:`STRIP_MIN_TAPS` long (the first writes
    an fp32 sum that the second adds), else one tap-loop pass; the sum is
    accumulated in fp32 and rounded once. Returns ``(N, C, H, W)`` in
    channels-last memory and the dtype of ``x``."""
    out = conv_forward_nhwc(_nhwc(x), [weight1, weight2], bias)
    return out.permute(0, 3, 1, 2)


@triton_depthwise_conv_pair_same.register_fake
def _(x, weight1, weight2, bias):
    return _channels_last_like(x, x.dtype)


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """Casts ``x`` as autocast would cast a conv's input (bf16/fp16 under
    an active autocast of its device type; weights stay as they are and
    are read in fp32)."""
    device_type = x.device.type
    if not x.is_floating_point() or not torch.is_autocast_enabled(device_type):
        return x
    return x.to(torch.get_autocast_dtype(device_type))


def depthwise_conv_same_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """A depthwise conv with per-axis "same" padding, on Triton.

    Computes ``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2),
    groups=C)`` with fp32 accumulation; differentiable in ``x``,
    ``weight`` and ``bias``. Under ``torch.autocast`` ``x`` is cast to the
    autocast dtype first, as for ``F.conv2d``.

    Args:
        x (Tensor): ``(N, C, H, W)``, fp32/bf16/fp16, on CUDA (or CPU under
            ``TRITON_INTERPRET=1``); channels-last memory saves a copy.
        weight (Tensor): ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd; taps
            that cannot reach the map are cropped off (their gradient is
            zero).
        bias (Tensor, optional): ``(C,)``.

    Returns:
        Tensor: ``(N, C, H, W)`` in channels-last memory, dtype of ``x``.
    """
    x = _autocast_input(x)
    check_inputs(x, [weight], bias)
    weight = reachable_kernel(weight, *x.shape[2:])
    return triton_depthwise_conv_same(x, weight, bias)


def depthwise_conv_branches_triton(
    x: torch.Tensor, weights: Sequence[torch.Tensor]
) -> List[torch.Tensor]:
    """Bias-free "same" depthwise convs of one input, on Triton.

    The branch convs of a training-mode large-kernel module (``K x s``,
    ``s x K``, ``s x s``; each followed by its own batch norm): the same as
    one :func:`depthwise_conv_same_triton` per weight, differentiable, but
    the forward pads ``x`` once for all of them and the backward pads each
    output gradient once for both of its gradients and ``x`` (along
    channels) once for all the weight gradients.

    Args:
        x (Tensor): ``(N, C, H, W)`` (see :func:`depthwise_conv_same_triton`).
        weights (Sequence[Tensor]): ``(C, 1, kh, kw)`` each, odd sizes.

    Returns:
        list[Tensor]: One ``(N, C, H, W)`` per weight, channels-last
        memory, dtype of ``x``.
    """
    x = _autocast_input(x)
    check_inputs(x, weights, None)
    height, width = x.shape[2:]
    cropped = [reachable_kernel(w, height, width) for w in weights]
    return triton_depthwise_conv_branches(x, cropped)


def depthwise_conv_pair_same_triton(
    x: torch.Tensor,
    weight1: torch.Tensor,
    weight2: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``conv(x, weight1) + conv(x, weight2) + bias``, "same" padding.

    The eval form of SLaK's large-kernel module: the two BN-folded strips
    (``K x s`` with the small kernel folded in, and ``s x K``) and the sum
    of their biases. Without gradients both convs read one padded copy
    of ``x``: two sliding-window passes for long strips (the second adds
    the first's fp32 sum), one tap-loop pass for short kernels; when a
    gradient is needed (e.g. BNs frozen by ``norm_eval`` in training) it
    is two differentiable convs.

    Args:
        x (Tensor): ``(N, C, H, W)`` (see :func:`depthwise_conv_same_triton`).
        weight1 (Tensor): ``(C, 1, kh1, kw1)``, odd sizes.
        weight2 (Tensor): ``(C, 1, kh2, kw2)``, odd sizes.
        bias (Tensor, optional): ``(C,)``, added once.

    Returns:
        Tensor: ``(N, C, H, W)`` in channels-last memory, dtype of ``x``.
    """
    x = _autocast_input(x)
    check_inputs(x, [weight1, weight2], bias)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight1, weight2, bias)
    )
    if needs_grad:
        return depthwise_conv_same_triton(
            x, weight1, bias
        ) + depthwise_conv_same_triton(x, weight2)
    height, width = x.shape[2:]
    weights = [
        reachable_kernel(weight1, height, width),
        reachable_kernel(weight2, height, width),
    ]
    return triton_depthwise_conv_pair_same(x, *weights, bias)

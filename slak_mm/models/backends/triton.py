"""``'triton'``: the depthwise convs on the Triton kernels, for CUDA.

- Every depthwise conv runs on
  :func:`~slak_mm.ops.triton_dwconv.depthwise_conv_same_triton`: forward,
  input gradient and weight gradient as Triton kernels, kernels cropped to
  the window that can reach the map, fp32 accumulation for fp32, bf16 and
  fp16 maps (under autocast the input is cast as for ``F.conv2d``). The
  conv+BN branches of a training-mode large-kernel module run their convs
  together
  (:func:`~slak_mm.ops.triton_dwconv.depthwise_conv_branches_triton`: one
  padded copy of the input for the three, one of each output gradient
  for both of its gradients), except in the first backward of a device
  and dtype, which runs them one at a time under its guard.
- The two folded strips of an eval-mode (or deploy) large-kernel module
  and their biases run in one kernel pass
  (:func:`~slak_mm.ops.triton_dwconv.depthwise_conv_pair_same_triton`; two
  differentiable convs when a gradient is needed, e.g. BNs frozen by
  ``norm_eval``).
- Maps stay channels-last (the kernels' layout); block MLPs, norms and
  everything else are the standard PyTorch ops of ``'native'``. While
  tracing, scripting or exporting, the standard ops run as in
  ``'native'``; ``torch.compile`` keeps the Triton kernels, which are
  custom ops (``slak_mm::triton_depthwise_conv_same``,
  ``slak_mm::triton_depthwise_conv_branches`` and
  ``slak_mm::triton_depthwise_conv_pair_same``, opaque to inductor).

``'auto'`` picks it on CUDA when Triton imports (it ships with the CUDA
builds of PyTorch); ``'native'`` (cuDNN) otherwise. On CPU tensors it runs
only when named explicitly and ``TRITON_INTERPRET=1`` is set (Triton's
interpreter, for tests); ``'auto'`` never picks it there.

When a kernel cannot compile or launch (an old GPU or Triton version, a
compile error, too few registers or shared memory; see
:func:`is_compile_or_launch_failure`), ``'auto'`` runs that case with the
standard conv of ``'native'`` (cuDNN) from then on: the case is the
device, the compute dtype and the kernel (``'conv'``, ``'pair'`` or
``'conv backward'``), so e.g. a bf16 failure leaves fp32 convs on Triton.
The first failure of each cause issues one :class:`TritonFallbackWarning`;
the results are those of ``'native'`` for that case. A failure in a
backward pass is caught the same way until that device and dtype have run
one Triton backward (in eager mode: while ``torch.compile`` traces, that
guard is left out of the graph, and a failure in compiled code
propagates; cases that fell back before run the standard conv there
too). ``backend='triton'`` raises instead (a RuntimeError
naming the cause, chained to Triton's error). Other errors (bad shapes,
devices, out of memory) propagate as they are in both modes.
"""

import os
import warnings
from typing import Dict, Optional, Set, Tuple

import torch
from torch.autograd.function import once_differentiable

from slak_mm.ops import triton_dwconv

from .base import compute_dtype, is_exporting, register_backend
from .native import NativeBackend

# (device, compute dtype, kernel): what one fallback decision covers.
Case = Tuple[torch.device, torch.dtype, str]


class TritonFallbackWarning(RuntimeWarning):
    """``'auto'`` runs the standard conv (cuDNN) where a Triton kernel could
    not compile or launch. Silence it with ``warnings.filterwarnings(
    'ignore', category=TritonFallbackWarning)``."""


def is_compile_or_launch_failure(error: BaseException) -> bool:
    """Whether ``error`` says that Triton could not compile or launch a
    kernel here (this GPU, this Triton), rather than that the call was wrong.

    Counted: Triton's own errors (``CompilationError``, ``OutOfResources``,
    ``PTXASError``, ...), the driver's launch errors (RuntimeErrors whose
    message starts with ``'Triton Error'``) and any other error raised in
    Triton's code (e.g. no C compiler for its launcher, an API another
    Triton version lacks). Not counted: running out of GPU memory (cuDNN
    would need the memory too) and errors raised by slak_mm's or torch's
    code (shapes, devices or dtypes the kernels do not take).

    Args:
        error (BaseException): An error raised by a Triton entry point of
            :mod:`slak_mm.ops.triton_dwconv`.
    """
    triton = triton_dwconv.triton
    if triton is None or isinstance(error, torch.OutOfMemoryError):
        return False
    triton_error = getattr(triton, 'TritonError', None)
    if triton_error is not None and isinstance(error, triton_error):
        return True
    if isinstance(error, RuntimeError) and str(error).startswith(
        'Triton Error'
    ):
        return True
    return _raised_in(error, os.path.dirname(triton.__file__))


def _raised_in(error: BaseException, directory: str) -> bool:
    """Whether the innermost Python frame of ``error`` is in ``directory``."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    filename = os.path.abspath(frame.tb_frame.f_code.co_filename)
    return filename.startswith(os.path.abspath(directory) + os.sep)


def _describe_error(error: BaseException) -> str:
    # A CompilationError's str() starts with a source excerpt; its
    # error_message holds the reason.
    text = getattr(error, 'error_message', None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    name = type(error).__name__
    return f'{name}: {lines[0][:300]}' if lines else name


def _describe_device(device: torch.device) -> str:
    triton_version = getattr(triton_dwconv.triton, '__version__', '?')
    if device.type != 'cuda':
        return f'{device} (Triton {triton_version})'
    index = device.index
    if index is None:
        index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return (
        f'{device} ({torch.cuda.get_device_name(index)}, sm_{major}{minor}, '
        f'Triton {triton_version})'
    )


def _needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors
    )


def _detached_leaves(tensors):
    """Leaves sharing storage with ``tensors``, requiring grad like them."""
    return [
        None if t is None else t.detach().requires_grad_(t.requires_grad)
        for t in tensors
    ]


@register_backend
class TritonBackend(NativeBackend):
    """The ``'triton'`` backend (see the module docstring).

    Args:
        falls_back (bool): Run the standard conv where a Triton kernel
            cannot compile or launch (the instance ``'auto'`` picks);
            False raises instead (``backend='triton'``).

    Attributes:
        failed_cases (dict): ``(device, compute dtype, kernel)`` -> cause,
            for the cases that run the standard conv from now on.
    """

    name = 'triton'
    device_types = ('cuda',)
    auto_priority = 10

    def __init__(self, falls_back: bool = False) -> None:
        self.falls_back = falls_back
        self.failed_cases: Dict[Case, str] = {}
        self._warned: Set[Tuple[torch.device, torch.dtype, str]] = set()
        # (device, dtype) pairs that ran one Triton backward: later ones run
        # unguarded (the compiled kernels do not depend on the shapes).
        self._backward_ran: Set[Tuple[torch.device, torch.dtype]] = set()
        self._auto_variant: Optional[TritonBackend] = None

    @classmethod
    def available(cls) -> bool:
        return triton_dwconv.available('cuda')

    def for_auto(self) -> 'TritonBackend':
        if self.falls_back:
            return self
        if self._auto_variant is None:
            self._auto_variant = type(self)(falls_back=True)
        return self._auto_variant

    def runs_on_request(self, device_type: str) -> bool:
        # Triton's interpreter runs the same kernels on CPU tensors.
        return device_type == 'cpu' and triton_dwconv.available('cpu')

    def channels_last(self, device):
        return True  # the Triton kernels' layout

    def conv_same(self, x, weight, bias):
        if is_exporting():
            return super().conv_same(x, weight, bias)
        dtype = compute_dtype(x)
        forward_case = (x.device, dtype, 'conv')
        backward_case = (x.device, dtype, 'conv backward')
        needs_grad = _needs_grad(x, weight, bias)
        if forward_case in self.failed_cases or (
            needs_grad and backward_case in self.failed_cases
        ):
            return super().conv_same(x, weight, bias)
        try:
            # The guard of the first backward (an autograd.Function holding
            # the backend and catching errors) is not traced by
            # torch.compile: compiled graphs call the custom op directly.
            if (
                needs_grad
                and backward_case[:2] not in self._backward_ran
                and not torch.compiler.is_compiling()
            ):
                return _GuardedTritonConv.apply(
                    self, backward_case, x, weight, bias
                )
            return triton_dwconv.depthwise_conv_same_triton(x, weight, bias)
        except Exception as error:
            if not is_compile_or_launch_failure(error):
                raise
            self.handle_failure(error, forward_case)
            return super().conv_same(x, weight, bias)

    def depthwise_convs(self, x, weights):
        if len(weights) < 2 or is_exporting():
            return super().depthwise_convs(x, weights)
        dtype = compute_dtype(x)
        forward_case = (x.device, dtype, 'conv')
        backward_case = (x.device, dtype, 'conv backward')
        needs_grad = _needs_grad(x, *weights)
        if (
            forward_case in self.failed_cases
            or (needs_grad and backward_case in self.failed_cases)
            or (
                needs_grad
                and backward_case[:2] not in self._backward_ran
                and not torch.compiler.is_compiling()
            )
        ):
            # One conv at a time, each with its fallback and (until one
            # Triton backward ran) the guard of the first backward.
            return super().depthwise_convs(x, weights)
        try:
            return triton_dwconv.depthwise_conv_branches_triton(x, weights)
        except Exception as error:
            if not is_compile_or_launch_failure(error):
                raise
            self.handle_failure(error, forward_case)
            return super().depthwise_convs(x, weights)

    def depthwise_conv_sum(self, x, kernels):
        if len(kernels) != 2 or is_exporting():
            return super().depthwise_conv_sum(x, kernels)
        (weight1, bias1), (weight2, bias2) = kernels
        if _needs_grad(x, weight1, weight2, bias1, bias2):
            # The pair kernel runs two differentiable convs then: run them
            # here, each with its own fallback.
            return super().depthwise_conv_sum(x, kernels)
        case = (x.device, compute_dtype(x), 'pair')
        if case in self.failed_cases:
            return self._standard_conv_sum(x, kernels)
        biases = [b for b in (bias1, bias2) if b is not None]
        bias = sum(biases[1:], biases[0]) if biases else None
        try:
            return triton_dwconv.depthwise_conv_pair_same_triton(
                x, weight1, weight2, bias
            )
        except Exception as error:
            if not is_compile_or_launch_failure(error):
                raise
            self.handle_failure(error, case)
            return self._standard_conv_sum(x, kernels)

    def _standard_conv_sum(self, x, kernels):
        """``'native'``'s sum of convs, added in the same order."""
        out = None
        for weight, bias in kernels:
            conv = NativeBackend.conv_same(self, x, weight, bias)
            out = conv if out is None else out + conv
        return out

    def handle_failure(self, error: Exception, case: Case) -> None:
        """Records a compile or launch failure of ``case`` and warns once per
        cause (``falls_back``), or raises the explicit-request error.

        Args:
            error (Exception): What the Triton entry point raised.
            case (tuple): ``(device, compute dtype, kernel)``.

        Raises:
            RuntimeError: Without ``falls_back``, naming the cause, from
                ``error``.
        """
        device, dtype, kernel = case
        cause = _describe_error(error)
        where = f'{kernel} kernel, {dtype} on {_describe_device(device)}'
        if not self.falls_back:
            raise RuntimeError(
                f"backend='triton': the Triton depthwise conv failed to "
                f'compile or launch ({where}): {cause}. '
                f"backend='auto' runs such cases with the standard conv "
                f"(cuDNN, as backend='native') instead."
            ) from error
        self.failed_cases[case] = cause
        if (device, dtype, cause) in self._warned:
            return
        self._warned.add((device, dtype, cause))
        warnings.warn(
            f'the Triton depthwise conv failed to compile or launch '
            f'({where}): {cause}. '
            f"backend='auto' runs these convs with the standard conv "
            f"(cuDNN) from now on, with the results of backend='native'. "
            f"backend='triton' raises this error instead; "
            f"warnings.filterwarnings('ignore', "
            f'category=slak_mm.models.backends.TritonFallbackWarning) '
            f'silences it.',
            TritonFallbackWarning,
            stacklevel=2,
        )


class _GuardedTritonConv(torch.autograd.Function):
    """:func:`~slak_mm.ops.triton_dwconv.depthwise_conv_same_triton` whose
    backward, if a Triton kernel fails there, goes to the backend's
    :meth:`TritonBackend.handle_failure` and (when it falls back) takes the
    standard conv's gradients.

    The forward records the Triton op's own graph on detached leaves and
    keeps its output, so the backward runs the Triton backward without
    recomputing anything; only the fallback recomputes the standard conv.
    """

    @staticmethod
    def forward(ctx, backend, case, x, weight, bias):
        leaves = _detached_leaves((x, weight, bias))
        with torch.enable_grad():
            out = triton_dwconv.depthwise_conv_same_triton(*leaves)
        device_type = x.device.type
        ctx.backend, ctx.case, ctx.leaves, ctx.triton_out = (
            backend,
            case,
            leaves,
            out,
        )
        ctx.autocast = dict(
            device_type=device_type,
            dtype=torch.get_autocast_dtype(device_type),
            enabled=torch.is_autocast_enabled(device_type),
        )
        return out.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        wanted = [t for t in ctx.leaves if t is not None and t.requires_grad]
        try:
            grads = torch.autograd.grad(ctx.triton_out, wanted, grad_out)
        except Exception as error:
            if not is_compile_or_launch_failure(error):
                raise
            ctx.backend.handle_failure(error, ctx.case)
            grads = _standard_conv_grads(ctx, grad_out)
        else:
            ctx.backend._backward_ran.add(ctx.case[:2])
        grads = iter(grads)
        return (None, None) + tuple(
            next(grads) if t is not None and t.requires_grad else None
            for t in ctx.leaves
        )


def _standard_conv_grads(ctx, grad_out):
    """Gradients of ``'native'``'s conv of the saved inputs, under the
    forward's autocast state."""
    leaves = _detached_leaves(ctx.leaves)
    with torch.enable_grad(), torch.autocast(**ctx.autocast):
        out = NativeBackend.conv_same(ctx.backend, *leaves)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    return torch.autograd.grad(out, wanted, grad_out)

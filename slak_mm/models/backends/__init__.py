"""Execution backends of SLaK: how depthwise convs and block MLPs run.

The option ``backend`` (``SLaK(backend=...)``; the forward argument of
:class:`~slak_mm.models.SLaKBlock` and
:class:`~slak_mm.models.LargeKernelConv` used on their own) names one of
the registered backends or ``'auto'``; every choice uses the same
parameters (one ``state_dict``, sparse masks keep working) and computes
the same function:

- ``'reference'`` (:mod:`.reference`): as released; NCHW, one ``nn.Conv2d``
  + BN per branch, ``nn.Linear``.
- ``'native'`` (:mod:`.native`): standard PyTorch ops; channels-last maps on
  CPU, cropped kernels, eval-mode BNs folded into the strips.
- ``'fast'`` (:mod:`.fast_cpu`): CPU only; ``'native'`` plus oneDNN kernels
  (fused strip sum, MLPs with fused or recomputed GELU) and a backward made
  of fast forward convs, in fp32 or in bf16 under CPU autocast.
- ``'triton'`` (:mod:`.triton`): CUDA; ``'native'`` with every depthwise
  conv (forward and both gradients) on the Triton kernels of
  :mod:`slak_mm.ops.triton_dwconv`, the eval strip pair in one pass. On
  CPU only by explicit request under ``TRITON_INTERPRET=1`` (tests).
  Where a kernel cannot compile or launch, ``'auto'`` runs that case as
  ``'native'`` with one :class:`TritonFallbackWarning` per cause; the
  explicit ``'triton'`` raises.
- ``'auto'`` (default): the available backend of highest
  ``auto_priority`` for the input's device: ``'fast'`` on CPU,
  ``'triton'`` on CUDA when Triton imports, ``'native'`` otherwise.

The option is state in one place, ``SLaK.backend``; its forward resolves
it once per call with :func:`resolve_backend` (:func:`get_backend`, cached
per name and device type) and passes the resolved backend down through the
stages and blocks to the large-kernel modules and MLPs, which hold no
backend state and call the backend's ``depthwise_conv`` /
``depthwise_conv_sum`` / ``mlp`` without comparing names. A built model
is switched with :func:`set_backend` or, for a ``with`` block,
:func:`use_backend` (tests, FLOP counting and the deploy check use it).
Every private PyTorch op the backends call sits in :mod:`.torch_private`.

Adding a backend (:mod:`.triton` is an example):

1. Write ``slak_mm/models/backends/<name>.py`` with a subclass of
   :class:`Backend` decorated with :func:`register_backend`: its ``name``,
   ``device_types`` (e.g. ``('cuda',)``), ``auto_priority`` (above
   ``'native'``'s 0 so that ``'auto'`` prefers it there), ``available()``
   checking that its packages import and the device is present (return
   False, never raise), and the methods it replaces (``depthwise_conv``,
   optionally ``depthwise_conv_sum``, ``mlp``, ``channels_last`` and
   ``runs_on_request``). Subclass :class:`NativeBackend` to keep
   the standard ops for what the kernel does not cover. A custom
   ``torch.autograd.Function`` belongs in that file; a private torch op
   belongs in :mod:`.torch_private` with a signature test.
2. Add its import to the registration list below: that one line is the
   only change outside the new file. The equivalence tests
   (``tests/test_backends.py``, ``tests/test_autocast.py``) run every
   registered backend that runs on the CPU; a GPU-only backend needs the
   same comparisons against ``'reference'`` run on its device.
"""

from slak_mm.ops.same_padding import reachable_kernel

from . import torch_private
from .base import (
    AUTO,
    Backend,
    TakesBackend,
    UsesBackend,
    backend_names,
    check_backend,
    compute_dtype,
    get_backend,
    is_tracing,
    register_backend,
    resolve_backend,
    set_backend,
    use_backend,
)
from .fast_cpu import FastCPUBackend, cache_weight_casts
from .native import NativeBackend

# Registration list: importing a backend module registers its backend.
from .reference import ReferenceBackend  # noqa: I001
from .triton import TritonBackend, TritonFallbackWarning

__all__ = [
    'AUTO',
    'Backend',
    'FastCPUBackend',
    'NativeBackend',
    'ReferenceBackend',
    'TritonBackend',
    'TritonFallbackWarning',
    'TakesBackend',
    'UsesBackend',
    'backend_names',
    'cache_weight_casts',
    'check_backend',
    'compute_dtype',
    'get_backend',
    'is_tracing',
    'torch_private',
    'reachable_kernel',
    'register_backend',
    'resolve_backend',
    'set_backend',
    'use_backend',
]

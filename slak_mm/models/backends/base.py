"""The backend interface, the registry and what backends share."""

import contextlib
import functools
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


class Backend:
    """How SLaK's depthwise convs and block MLPs are computed.

    A backend never owns parameters: it computes with the ``(C, 1, kh, kw)``
    weights and the ``nn.Linear`` layers of the modules as they are, so every
    backend shares one ``state_dict`` and sparse masks keep working.
    Subclasses set the class attributes and override what they change.

    Attributes:
        name (str): The value of the ``backend`` option.
        device_types (tuple[str] | None): Device types it runs on (``None``:
            any).
        auto_priority (int | None): Rank among the backends ``'auto'`` may
            pick for a device (highest available wins); ``None``: never
            picked by ``'auto'``.
        runs_modules_as_defined (bool): The modules run their own layers
            (one ``nn.Conv2d`` + BN per branch, ``nn.Linear``), as released;
            the other methods are then not called by the model.
    """

    name: str = ''
    device_types: Optional[Tuple[str, ...]] = None
    auto_priority: Optional[int] = None
    runs_modules_as_defined: bool = False

    @classmethod
    def available(cls) -> bool:
        """Whether this PyTorch build (and machine) can run the backend."""
        return True

    def channels_last(self, device: torch.device) -> bool:
        """Whether feature maps should be channels-last on ``device``."""
        return False

    def depthwise_conv(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        accumulate: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """A depthwise conv with per-axis "same" padding.

        Args:
            x (Tensor): ``(N, C, H, W)``.
            weight (Tensor): ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
            bias (Tensor, optional): ``(C,)``.
            accumulate (Tensor, optional): ``(N, C, H, W)``, added to the
                result (never changed in place).

        Returns:
            Tensor: ``(N, C, H, W)``.
        """
        out = self.conv_same(x, weight, bias)
        return out if accumulate is None else accumulate + out

    def conv_same(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The conv of :meth:`depthwise_conv` without ``accumulate``: what a
        backend replaces to run its own kernel."""
        return same_depthwise_conv(x, weight, bias)

    def depthwise_convs(
        self, x: torch.Tensor, weights: Sequence[torch.Tensor]
    ) -> List[torch.Tensor]:
        """Bias-free "same" depthwise convs of one input, one output per
        weight (the branches of a large-kernel module with batch
        statistics, each followed by its own batch norm).

        Args:
            x (Tensor): ``(N, C, H, W)``.
            weights (Sequence[Tensor]): ``(C, 1, kh, kw)`` each.

        Returns:
            list[Tensor]: One ``(N, C, H, W)`` per weight.
        """
        return [self.depthwise_conv(x, weight) for weight in weights]

    def depthwise_conv_sum(
        self,
        x: torch.Tensor,
        kernels: Sequence[Tuple[torch.Tensor, Optional[torch.Tensor]]],
    ) -> torch.Tensor:
        """The sum of "same" depthwise convs of one input (the folded
        strips of an eval-mode or deploy large-kernel module).

        Args:
            x (Tensor): ``(N, C, H, W)``.
            kernels (list[tuple[Tensor, Tensor | None]]): One or more
                ``(weight (C, 1, kh, kw), bias (C,) or None)``.

        Returns:
            Tensor: ``(N, C, H, W)``.
        """
        out = None
        for weight, bias in kernels:
            out = self.depthwise_conv(x, weight, bias, accumulate=out)
        return out

    def layer_norm(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(x)`` over the last axis of ``(..., C)`` (the block norm
        in front of the MLP)."""
        return norm(x)

    def mlp(
        self, x: torch.Tensor, fc1: nn.Linear, act: nn.Module, fc2: nn.Linear
    ) -> torch.Tensor:
        """``fc2(act(fc1(x)))`` over the last axis of ``(..., C)``."""
        return fc2(act(fc1(x)))

    def for_auto(self) -> 'Backend':
        """The instance that runs when ``'auto'`` picks this backend: itself,
        unless the backend falls back where an explicit request raises (see
        :class:`~slak_mm.models.backends.TritonBackend`)."""
        return self

    def runs_on_request(self, device_type: str) -> bool:
        """Whether the backend also runs on ``device_type`` when named
        explicitly, outside ``device_types`` and never picked there by
        ``'auto'`` (e.g. GPU kernels under an interpreter, for tests).
        Checked at every call (it may depend on the environment)."""
        return False

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r})'


# name -> backend instance (backends hold no parameters; the Triton
# backend's 'auto' variant remembers which cases fell back).
_BACKENDS: Dict[str, Backend] = {}
AUTO = 'auto'


def register_backend(cls):
    """Class decorator adding a :class:`Backend` subclass to the registry."""
    if not cls.name or cls.name == AUTO:
        raise ValueError(f'{cls.__name__} needs a name other than {AUTO!r}')
    if cls.name in _BACKENDS:
        raise KeyError(f'backend {cls.name!r} is already registered')
    _BACKENDS[cls.name] = cls()
    _resolve.cache_clear()
    return cls


def backend_names() -> Tuple[str, ...]:
    """Every value the ``backend`` option accepts (``'auto'`` first)."""
    return (AUTO,) + tuple(_BACKENDS)


def check_backend(name: str) -> str:
    """Validates a ``backend`` choice and returns it."""
    if name != AUTO and name not in _BACKENDS:
        raise ValueError(
            f'backend must be one of {backend_names()}, got {name!r}'
        )
    return name


def get_backend(name: str, device: torch.device) -> Backend:
    """The backend that runs for option ``name`` on ``device``.

    ``'auto'`` picks the available backend of highest ``auto_priority``
    that runs on the device (its :meth:`Backend.for_auto`). A named
    backend that cannot run there raises, unless it runs there on request
    (:meth:`Backend.runs_on_request`).
    """
    device_type = torch.device(device).type
    backend = _BACKENDS.get(name)
    if backend is not None and backend.runs_on_request(device_type):
        return backend
    return _resolve(name, device_type)


@functools.cache
def _resolve(name: str, device_type: str) -> Backend:
    check_backend(name)
    if name == AUTO:
        candidates = [
            b
            for b in _BACKENDS.values()
            if b.auto_priority is not None
            and _runs_on(b, device_type)
            and b.available()
        ]
        if not candidates:
            raise RuntimeError(f'no backend runs on {device_type}')
        return max(candidates, key=lambda b: b.auto_priority).for_auto()
    backend = _BACKENDS[name]
    if not _runs_on(backend, device_type):
        raise ValueError(
            f'backend {name!r} runs on {backend.device_types} only, the '
            f"input is on {device_type}; use 'auto' or 'native'"
        )
    if not backend.available():
        raise RuntimeError(
            f'backend {name!r} is not available in this PyTorch build '
            f"(torch {torch.__version__}); use 'auto' or 'native'"
        )
    return backend


def _runs_on(backend: Backend, device_type: str) -> bool:
    return backend.device_types is None or device_type in backend.device_types


def same_depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> torch.Tensor:
    """``F.conv2d`` with ``groups=C`` and padding ``(kh // 2, kw // 2)``.

    Args:
        x (Tensor): ``(N, C, H, W)``.
        weight (Tensor): ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
        bias (Tensor, optional): ``(C,)``.

    Returns:
        Tensor: ``(N, C, H, W)``, in the memory format of ``x``.
    """
    kh, kw = weight.shape[2:]
    return F.conv2d(
        x, weight, bias, padding=(kh // 2, kw // 2), groups=x.shape[1]
    )


def is_tracing() -> bool:
    """Whether a tracer (``torch.jit.trace``, ``torch.export``,
    ``torch.compile``) or the TorchScript compiler is recording, so that
    only standard ops may run."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
    )


def is_exporting() -> bool:
    """Whether a tracer that must see only standard ops is recording
    (``torch.jit.trace``/``script``, ``torch.export``, the ONNX exporters);
    ``torch.compile`` keeps the backends' custom ops instead."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_exporting()
    )


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a conv or linear on ``x`` computes in: the autocast dtype
    when autocast is on for ``x``'s device and ``x`` is fp32/bf16/fp16,
    else ``x.dtype``."""
    device_type = x.device.type
    if x.dtype in (
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class UsesBackend:
    """Marks the module that holds a model's ``backend`` option (a str):
    :class:`~slak_mm.models.SLaK`.

    It is the only backend state of a model: its forward resolves the
    option once with :func:`resolve_backend` and passes the resolved
    :class:`Backend` down to its blocks, which pass it on to their
    large-kernel modules and MLPs. :func:`set_backend` and
    :func:`use_backend` switch every such module of a built model.
    """

    backend: str = AUTO


class TakesBackend:
    """Marks a module that holds no backend option and runs with the
    backend passed to its forward (``module(x, backend)``, resolved with
    :func:`resolve_backend`; ``'auto'`` when None), e.g.
    :class:`~slak_mm.models.SLaKBlock` and
    :class:`~slak_mm.models.LargeKernelConv`."""


def resolve_backend(
    backend: Union[None, str, Backend], device: torch.device
) -> Backend:
    """The backend a module runs with: the one place a ``backend``
    argument of a forward is resolved.

    Args:
        backend (str | Backend | None): A name of :func:`backend_names`,
            an already resolved backend (returned as it is), or None for
            ``'auto'``.
        device (torch.device): The input's device.

    Returns:
        Backend: What runs, see :func:`get_backend`.
    """
    if isinstance(backend, Backend):
        return backend
    return get_backend(AUTO if backend is None else backend, device)


def _backend_holders(model: nn.Module, caller: str) -> List[UsesBackend]:
    """The modules of ``model`` holding a ``backend`` option.

    Raises:
        ValueError: If there is none but ``model`` holds modules that run
            with a backend passed to their forward: switching would
            silently change nothing.
    """
    holders = [m for m in model.modules() if isinstance(m, UsesBackend)]
    if not holders and any(
        isinstance(m, TakesBackend) for m in model.modules()
    ):
        raise ValueError(
            f'{caller}: {type(model).__name__} holds no backend option (only '
            'SLaK does); its large-kernel modules and blocks run with the '
            'backend passed to their forward, e.g. module(x, "reference")'
        )
    return holders


def set_backend(model: nn.Module, name: str) -> None:
    """Switches every SLaK of a built ``model`` to backend ``name``.

    Parameters, buffers and outputs (within float tolerance) stay the same.
    A model without SLaK modules is left as it is.

    Args:
        model (nn.Module): Any model holding SLaK backbones.
        name (str): One of :func:`backend_names`.

    Raises:
        ValueError: For an unknown ``name``, or a ``model`` made of SLaK's
            inner modules alone (a block, a large-kernel module), which
            take the backend as a forward argument instead.
    """
    check_backend(name)
    for module in _backend_holders(model, 'set_backend'):
        module.backend = name


@contextlib.contextmanager
def use_backend(model: nn.Module, name: str):
    """Runs ``model`` with backend ``name`` inside the ``with`` block, then
    restores each SLaK's own choice.

    Raises as :func:`set_backend`.

    Example:
        >>> with use_backend(model, 'reference'):
        ...     flops = count(model)  # the model as defined
    """
    check_backend(name)
    previous = [
        (module, module.backend)
        for module in _backend_holders(model, 'use_backend')
    ]
    set_backend(model, name)
    try:
        yield model
    finally:
        for module, backend in previous:
            module.backend = backend

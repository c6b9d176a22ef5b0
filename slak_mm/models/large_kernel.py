"""The decomposed sparse large-kernel module of SLaK and its deploy form."""

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backends import Backend, TakesBackend, resolve_backend

_NORM_TYPES = {
    'BN': nn.BatchNorm2d,
    'BN2d': nn.BatchNorm2d,
    'SyncBN': nn.SyncBatchNorm,
}


def build_kernel_norm(norm_cfg: dict, num_channels: int) -> nn.Module:
    """Builds the batch norm that follows each large-kernel branch.

    Built here rather than through a registry so that the same config works
    under the mmdet, mmseg and mmpretrain default scopes alike.

    Args:
        norm_cfg (dict): ``type`` is ``'BN'`` (alias ``'BN2d'``) or
            ``'SyncBN'``; ``eps``, ``momentum`` and ``requires_grad`` are
            optional.
        num_channels (int): Number of channels.
    """
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type', None)
    if norm_type not in _NORM_TYPES:
        raise ValueError(
            f'norm_cfg type must be one of {sorted(_NORM_TYPES)}'
            f', got {norm_type!r}'
        )
    requires_grad = cfg.pop('requires_grad', True)
    unknown = set(cfg) - {'eps', 'momentum'}
    if unknown:
        raise ValueError(f'norm_cfg has unsupported keys {sorted(unknown)}')
    norm = _NORM_TYPES[norm_type](num_channels, **cfg)
    for param in norm.parameters():
        param.requires_grad = requires_grad
    return norm


def fuse_conv_bn(
    conv_weight: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Folds an eval-mode batch norm into the bias-free conv before it.

    Args:
        conv_weight (Tensor): Depthwise weight of shape ``(C, 1, kh, kw)``.
        bn (_BatchNorm): The batch norm with C channels.

    Returns:
        tuple[Tensor, Tensor]: Weight ``(C, 1, kh, kw)`` and bias ``(C,)``.
    """
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    weight = conv_weight * scale.reshape(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    return weight, bias


def pad_kernel_to(
    kernel: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Zero-pads an odd-sized kernel symmetrically to ``height x width``.

    Args:
        kernel (Tensor): Shape ``(C, 1, kh, kw)`` with ``kh <= height`` and
            ``kw <= width``, all odd.

    Returns:
        Tensor: Shape ``(C, 1, height, width)`` with the kernel at the centre.
    """
    pad_h = (height - kernel.shape[2]) // 2
    pad_w = (width - kernel.shape[3]) // 2
    return F.pad(kernel, (pad_w, pad_w, pad_h, pad_h))


def depthwise_same_conv(
    channels: int, kernel_size: Tuple[int, int], bias: bool
) -> nn.Conv2d:
    """A depthwise conv padded "same" per axis (odd kernel sizes)."""
    return nn.Conv2d(
        channels,
        channels,
        kernel_size,
        padding=(kernel_size[0] // 2, kernel_size[1] // 2),
        groups=channels,
        bias=bias,
    )


class ConvBN(nn.Module):
    """A bias-free depthwise conv followed by batch norm.

    The child names (``conv``, ``bn``) match the released checkpoints.

    Args:
        channels (int): Number of channels C (groups = C).
        kernel_size (tuple[int, int]): ``(kh, kw)``, both odd.
        norm_cfg (dict): Config of the batch norm.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: Tuple[int, int],
        norm_cfg: dict,
    ) -> None:
        super().__init__()
        self.conv = depthwise_same_conv(channels, kernel_size, bias=False)
        self.bn = build_kernel_norm(norm_cfg, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs conv and BN as defined (the ``'reference'`` form; the other
        backends compute the branch convs from ``conv.weight``)."""
        return self.bn(self.conv(x))

    def fused(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the BN-folded ``(weight, bias)`` of this branch.

        Differentiable, so that a frozen-statistics BN (eval mode, e.g.
        ``norm_eval``) can be folded on the fly during training too.
        """
        return fuse_conv_bn(self.conv.weight, self.bn)


class LargeKernelConv(TakesBackend, nn.Module):
    """SLaK's large-kernel depthwise module.

    With ``decompose=True`` (SLaK) it sums three depthwise conv+BN branches:
    ``vertical`` (``K x s``), ``horizontal`` (``s x K``) and ``small``
    (``s x s``). With ``decompose=False`` (RepLKNet style) it sums ``large``
    (``K x K``) and ``small``. Every conv is padded "same" per axis, so the
    spatial size is kept for any input, including maps smaller than K.

    In deploy form each BN is folded into its conv and the small kernel into
    the centre of the vertical strip (or of the ``K x K`` kernel), leaving
    ``fused_vertical`` + ``fused_horizontal`` (or ``fused_large``).

    Args:
        channels (int): Number of channels C.
        kernel_size (int): Large kernel size K, odd.
        small_kernel (int): Small kernel size s, odd, ``s <= K``.
        decompose (bool): Use the ``K x s`` / ``s x K`` strips.
        norm_cfg (dict): Config of the branch batch norms.
        deploy (bool): Build directly in deploy form.

    How the depthwise convs are computed is the ``backend`` argument of
    :meth:`forward`, not state of this module: inside SLaK the backbone
    passes its own, resolved once per call.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        small_kernel: int = 5,
        decompose: bool = True,
        norm_cfg: Optional[dict] = None,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or small_kernel % 2 == 0:
            raise ValueError(
                'kernel sizes must be odd for "same" padding, got '
                f'kernel_size={kernel_size}, '
                f'small_kernel={small_kernel}'
            )
        if small_kernel > kernel_size:
            raise ValueError(
                f'small_kernel ({small_kernel}) must not exceed '
                f'kernel_size ({kernel_size})'
            )
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        self.channels = channels
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.decompose = decompose
        self.deploy = False
        large, small = kernel_size, small_kernel
        if decompose:
            self.vertical = ConvBN(channels, (large, small), norm_cfg)
            self.horizontal = ConvBN(channels, (small, large), norm_cfg)
        else:
            self.large = ConvBN(channels, (large, large), norm_cfg)
        self.small = ConvBN(channels, (small, small), norm_cfg)
        if deploy:
            self.switch_to_deploy()

    def forward(
        self, x: torch.Tensor, backend: Union[None, str, Backend] = None
    ) -> torch.Tensor:
        """Runs the large-kernel depthwise conv.

        Args:
            x (Tensor): ``(N, C, H, W)``.
            backend (str | Backend, optional): How the depthwise convs are
                computed, resolved with
                :func:`~slak_mm.models.backends.resolve_backend` (None for
                ``'auto'``): with ``'reference'`` every branch runs its
                ``nn.Conv2d`` + BN as released; the others crop kernels to
                the reachable window and fold eval-mode BNs and the small
                kernel into the strips on the fly. All give the same outputs
                and gradients and use the same parameters.

        Returns:
            Tensor: ``(N, C, H, W)``.
        """
        backend = resolve_backend(backend, x.device)
        if backend.runs_modules_as_defined:
            return self._reference_forward(x)
        if backend.channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        if self.deploy:
            kernels = [
                (conv.weight, conv.bias) for conv in self._fused_convs()
            ]
        elif not any(branch.bn.training for branch in self._branches()):
            # Eval-mode BNs are affine maps: fold them (and the small kernel)
            # into the strips, leaving two convs instead of three plus BNs.
            kernels = list(self._fold_kernels().values())
        else:
            # Batch statistics need every branch's own output; the backend
            # computes the branch convs together (they share one input).
            branches = self._branches()
            convs = backend.depthwise_convs(
                x, [branch.conv.weight for branch in branches]
            )
            outs = [branch.bn(out) for branch, out in zip(branches, convs)]
            return sum(outs[1:], outs[0])
        return backend.depthwise_conv_sum(x, kernels)

    def _branches(self):
        if self.decompose:
            return [self.vertical, self.horizontal, self.small]
        return [self.large, self.small]

    def _fused_convs(self):
        if self.decompose:
            return [self.fused_vertical, self.fused_horizontal]
        return [self.fused_large]

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The released computation: one conv (+ BN) per branch, NCHW."""
        if self.deploy:
            if self.decompose:
                return self.fused_vertical(x) + self.fused_horizontal(x)
            return self.fused_large(x)
        if self.decompose:
            out = self.vertical(x) + self.horizontal(x)
        else:
            out = self.large(x)
        return out + self.small(x)

    @torch.no_grad()
    def fused_kernels(self):
        """Returns the deploy-form ``{name: (weight, bias)}``.

        Returns:
            dict[str, tuple[Tensor, Tensor]]: ``fused_vertical`` ``(C, 1, K,
            s)`` and ``fused_horizontal`` ``(C, 1, s, K)``, or
            ``fused_large`` ``(C, 1, K, K)``; biases ``(C,)``.
        """
        return self._fold_kernels()

    def _fold_kernels(self):
        """Differentiable version of :meth:`fused_kernels`."""
        small_weight, small_bias = self.small.fused()
        if self.decompose:
            vert_weight, vert_bias = self.vertical.fused()
            horiz_weight, horiz_bias = self.horizontal.fused()
            vert_weight = vert_weight + pad_kernel_to(
                small_weight, *vert_weight.shape[2:]
            )
            return dict(
                fused_vertical=(vert_weight, vert_bias + small_bias),
                fused_horizontal=(horiz_weight, horiz_bias),
            )
        large_weight, large_bias = self.large.fused()
        large_weight = large_weight + pad_kernel_to(
            small_weight, *large_weight.shape[2:]
        )
        return dict(fused_large=(large_weight, large_bias + small_bias))

    def switch_to_deploy(self) -> None:
        """Replaces the conv+BN branches by the fused convs, in place."""
        if self.deploy:
            return
        large, small = self.kernel_size, self.small_kernel
        shapes = dict(
            fused_vertical=(large, small),
            fused_horizontal=(small, large),
            fused_large=(large, large),
        )
        fused = self.fused_kernels()
        for name, (weight, bias) in fused.items():
            conv = depthwise_same_conv(self.channels, shapes[name], bias=True)
            conv.to(device=weight.device, dtype=weight.dtype)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(bias)
            setattr(self, name, conv)
        for name in ('vertical', 'horizontal', 'large', 'small'):
            if hasattr(self, name):
                delattr(self, name)
        self.deploy = True

    def extra_repr(self) -> str:
        return (
            f'channels={self.channels}, kernel_size={self.kernel_size}, '
            f'small_kernel={self.small_kernel}, '
            f'decompose={self.decompose}, deploy={self.deploy}'
        )

"""The SLaK backbone (Sparse Large Kernel Network)."""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from .backends import (
    AUTO,
    Backend,
    TakesBackend,
    UsesBackend,
    check_backend,
    get_backend,
    resolve_backend,
)
from .checkpoint import load_slak_pretrained, split_pretrained_entries
from .large_kernel import LargeKernelConv
from .layers import DropPath, LayerNorm2d
from .mlp import BlockMLP
from .settings import ARCH_ALIASES, ARCH_SETTINGS, SLaKArchSettings


class SLaKBlock(TakesBackend, nn.Module):
    """One SLaK block: ``x + drop_path(gamma * MLP(LN(LK(x))))``.

    Args:
        channels (int): Number of channels C.
        kernel_size (int): Large kernel size K of this stage.
        small_kernel (int): Small kernel size s.
        decompose (bool): Use ``K x s`` + ``s x K`` strips.
        mlp_ratio (float): Hidden width of the MLP over C.
        drop_path_rate (float): Stochastic depth rate of this block.
        layer_scale_init_value (float): Initial gamma; 0 disables it.
        norm_cfg (dict): Config of the large-kernel batch norms.
        with_cp (bool): Use gradient checkpointing.
        deploy (bool): Build the large kernel in deploy form.

    How the large-kernel convs and the MLP run is the ``backend`` argument
    of :meth:`forward`: inside SLaK the backbone passes its own.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        small_kernel: int,
        decompose: bool = True,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        norm_cfg: Optional[dict] = None,
        with_cp: bool = False,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.large_kernel = LargeKernelConv(
            channels,
            kernel_size,
            small_kernel,
            decompose=decompose,
            norm_cfg=norm_cfg,
            deploy=deploy,
        )
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        hidden = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(hidden, channels)
        # Runs the three layers above, passed at every call (they keep
        # their state-dict names and may be replaced by assignment).
        self.mlp = BlockMLP()
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(
                layer_scale_init_value * torch.ones(channels)
            )
        else:
            self.gamma = None
        self.drop_path = DropPath(drop_path_rate)

    def _forward(self, x: torch.Tensor, backend: Backend) -> torch.Tensor:
        shortcut = x
        x = self.large_kernel(x, backend)
        # A free view when x is channels-last in memory (the fast paths),
        # a copy inside the norm otherwise (the reference path).
        x = x.permute(0, 2, 3, 1)
        x = backend.layer_norm(x, self.norm)
        x = self.mlp(
            x, self.pointwise_conv1, self.act, self.pointwise_conv2, backend
        )
        drops_paths = self.training and self.drop_path.drop_prob > 0
        if (
            not backend.runs_modules_as_defined
            and not drops_paths
            and shortcut.is_contiguous(memory_format=torch.channels_last)
        ):
            # One pass for scale and residual add, in NHWC (a free view of
            # the channels-last shortcut).
            shortcut = shortcut.permute(0, 2, 3, 1)
            if self.gamma is None:
                x = shortcut + x
            else:
                x = torch.addcmul(shortcut, x, self.gamma)
            return x.permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)

    def forward(
        self, x: torch.Tensor, backend: Union[None, str, Backend] = None
    ) -> torch.Tensor:
        """Runs the block.

        Args:
            x (Tensor): ``(N, C, H, W)``.
            backend (str | Backend, optional): How the large-kernel convs
                and the MLP run (see :mod:`slak_mm.models.backends`),
                resolved with
                :func:`~slak_mm.models.backends.resolve_backend`; None for
                ``'auto'``.

        Returns:
            Tensor: ``(N, C, H, W)``.
        """
        backend = resolve_backend(backend, x.device)
        if self.with_cp and x.requires_grad:
            # The resolved backend is an argument, so the recomputation in
            # the backward runs with it too.
            return cp.checkpoint(
                self._forward, x, backend, use_reentrant=False
            )
        return self._forward(x, backend)


class SLaKStage(nn.Sequential):
    """The blocks of one stage, run in order with one backend.

    An ``nn.Sequential`` (children ``0``, ``1``, ... as released) whose
    forward also takes the backend, so that hooks on a stage fire as on any
    module.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``.
    """

    def forward(
        self, x: torch.Tensor, backend: Union[None, str, Backend] = None
    ) -> torch.Tensor:
        """Args: x ``(N, C, H, W)``; backend as in
        :meth:`SLaKBlock.forward`, resolved once for all blocks."""
        backend = resolve_backend(backend, x.device)
        for block in self:
            x = block(x, backend)
        return x


@MODELS.register_module()
class SLaK(UsesBackend, BaseModule):
    """SLaK backbone: "More ConvNets in the 2020s: Scaling up Kernels Beyond
    51x51 using Sparsity" (https://arxiv.org/abs/2207.03620).

    A ConvNeXt-shaped network whose depthwise conv is a decomposed large
    kernel (``K x s`` + ``s x K`` + ``s x s`` strips, each with BN), widened
    by ``width_factor`` and meant to be trained sparse.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (or ``'t'``,
            ``'s'``, ``'b'``), or a dict with ``depths`` and ``channels``
            (base widths, before ``width_factor``).
        kernel_sizes (Sequence[int]): Large kernel size of each stage.
            Defaults to (51, 49, 47, 13).
        small_kernel (int): Small kernel size. Defaults to 5.
        width_factor (float): Multiplies the base widths; results are
            truncated with ``int()`` as released. Defaults to 1.3.
        decompose (bool): True for the ``K x s`` / ``s x K`` strips (SLaK);
            False for one ``K x K`` kernel plus the small one (RepLKNet
            style). Defaults to True.
        in_channels (int): Input channels. Defaults to 3.
        drop_path_rate (float): Stochastic depth rate, linearly increasing
            over the blocks. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale; 0 disables it.
            Defaults to 1e-6.
        out_indices (int | Sequence[int]): Stages whose outputs are returned,
            each through its own LayerNorm ``norm{i}``. Defaults to -1.
        frozen_stages (int): Stages (with their downsampling layers and
            output norms) to freeze; 0 freezes nothing. Defaults to 0.
        norm_eval (bool): Keep the large-kernel batch norms in eval mode
            while training. Defaults to False.
        norm_cfg (dict): Config of the large-kernel batch norms, ``BN`` or
            ``SyncBN``. Defaults to ``dict(type='BN')``.
        gap_before_final_norm (bool): Classification mode: global average
            pool each output and then apply ``norm{i}``, returning
            ``(N, C)`` tensors. Defaults to False.
        with_cp (bool): Gradient checkpointing per block. Defaults to False.
        deploy (bool): Build the large kernels in deploy form (fused BN,
            small kernel folded in). Defaults to False.
        backend (str): How the large-kernel depthwise convs and the block
            MLPs run; every choice has the same parameters, outputs and
            gradients. ``'auto'`` (``'fast'`` on CPU: channels-last oneDNN
            kernels with a backward of forward convs and oneDNN MLPs, also
            in bf16 under CPU autocast; ``'native'`` elsewhere),
            ``'fast'``, ``'native'`` (standard PyTorch ops) or
            ``'reference'`` (as released: NCHW, one ``nn.Conv2d`` + BN per
            branch). Switch a built model with
            :func:`~slak_mm.models.backends.set_backend`. See
            :mod:`slak_mm.models.backends`. Defaults to ``'auto'``.
        init_cfg (dict | list[dict], optional): Initialization config. With
            ``dict(type='Pretrained', checkpoint=..., prefix=...)`` the
            checkpoint may be an OpenMMLab one (``state_dict``) or a released
            SLaK ImageNet one (``model``); shapes are checked strictly.

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: a tuple with, for each index i in ``out_indices``,
          ``(N, C_i, H_i, W_i)`` (or ``(N, C_i)`` in classification mode),
          where ``H_1 = floor(H / 4)`` and every later stage halves it with
          floor, e.g. 37x53 gives 9x13, 4x6, 2x3, 1x1.
    """

    # Every mmengine load into a model holding SLaK is checked (see
    # slak_mm.utils.checkpoint.make_mmengine_loading_strict).
    requires_strict_checkpoint_loading = True

    arch_settings = ARCH_SETTINGS
    arch_aliases = ARCH_ALIASES

    def __init__(
        self,
        arch: Union[str, dict] = 'tiny',
        kernel_sizes: Sequence[int] = (51, 49, 47, 13),
        small_kernel: int = 5,
        width_factor: float = 1.3,
        decompose: bool = True,
        in_channels: int = 3,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        out_indices: Union[int, Sequence[int]] = -1,
        frozen_stages: int = 0,
        norm_eval: bool = False,
        norm_cfg: Optional[dict] = None,
        gap_before_final_norm: bool = False,
        with_cp: bool = False,
        deploy: bool = False,
        backend: str = AUTO,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(
            init_cfg=_default_init_cfg() if init_cfg is None else init_cfg
        )
        # Every shape argument checked in one place.
        self.settings = settings = SLaKArchSettings(
            arch=arch,
            kernel_sizes=kernel_sizes,
            small_kernel=small_kernel,
            width_factor=width_factor,
            in_channels=in_channels,
            out_indices=out_indices,
            drop_path_rate=drop_path_rate,
            frozen_stages=frozen_stages,
        )
        self.num_stages = settings.num_stages
        self.depths = list(settings.depths)
        self.channels = list(settings.channels)
        self.kernel_sizes = list(settings.kernel_sizes)
        self.small_kernel = small_kernel
        self.width_factor = width_factor
        self.decompose = decompose
        self.out_indices = list(settings.out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.gap_before_final_norm = gap_before_final_norm
        self.deploy = deploy
        self.backend = check_backend(backend)

        self.downsample_layers = self._build_downsample_layers(in_channels)
        block_cfg = dict(
            small_kernel=small_kernel,
            decompose=decompose,
            layer_scale_init_value=layer_scale_init_value,
            norm_cfg=norm_cfg,
            with_cp=with_cp,
            deploy=deploy,
        )
        self.stages = self._build_stages(drop_path_rate, block_cfg)
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(self.channels[i]))
        self._freeze_stages()

    def _build_downsample_layers(self, in_channels: int) -> nn.ModuleList:
        """The 4x4/s4 stem (conv + LN), then LN + 2x2/s2 conv per stage."""
        layers = nn.ModuleList()
        layers.append(
            nn.Sequential(
                nn.Conv2d(in_channels, self.channels[0], 4, stride=4),
                LayerNorm2d(self.channels[0]),
            )
        )
        for i in range(1, self.num_stages):
            layers.append(
                nn.Sequential(
                    LayerNorm2d(self.channels[i - 1]),
                    nn.Conv2d(
                        self.channels[i - 1], self.channels[i], 2, stride=2
                    ),
                )
            )
        return layers

    def _build_stages(
        self, drop_path_rate: float, block_cfg: dict
    ) -> nn.ModuleList:
        """One :class:`SLaKStage` of :class:`SLaKBlock` per stage, with the
        stochastic depth rate rising linearly over all blocks.

        Args:
            drop_path_rate (float): Rate of the last block.
            block_cfg (dict): Keyword arguments every block shares.
        """
        block_drop_rates = torch.linspace(
            0, drop_path_rate, sum(self.depths)
        ).tolist()
        stages = nn.ModuleList()
        block_index = 0
        for i, depth in enumerate(self.depths):
            stages.append(
                SLaKStage(
                    *[
                        SLaKBlock(
                            self.channels[i],
                            self.kernel_sizes[i],
                            drop_path_rate=block_drop_rates[block_index + j],
                            **block_cfg,
                        )
                        for j in range(depth)
                    ]
                )
            )
            block_index += depth
        return stages

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Runs the backbone.

        Args:
            x (Tensor): Images of shape ``(N, in_channels, H, W)``.

        Returns:
            tuple[Tensor]: One tensor per entry of ``out_indices``.

        Raises:
            ValueError: If H or W is below :attr:`min_input_size`.
        """
        self._check_input_size(x)
        # Resolved once here; the stages, blocks and large-kernel modules
        # hold no backend state of their own.
        backend = get_backend(self.backend, x.device)
        if backend.channels_last(x.device):
            # Kept through every layer: the depthwise convs are several
            # times faster and the block MLPs need no permute copies.
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i in range(self.num_stages):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x, backend)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean(dim=(-2, -1))))
                else:
                    # Necks and heads get the usual contiguous NCHW maps.
                    outs.append(norm(x).contiguous())
        return tuple(outs)

    def extra_repr(self) -> str:
        # The one backend option of the model; inner modules hold none.
        return f'backend={self.backend!r}'

    @property
    def min_input_size(self) -> int:
        """Smallest input side: the unpadded 4x4/s4 stem and 2x2/s2
        downsamplings need at least one pixel at every stage, so
        ``4 * 2 ** (num_stages - 1)`` (32 for four stages)."""
        return 4 * 2 ** (self.num_stages - 1)

    def _check_input_size(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f'SLaK expects (N, C, H, W) inputs, got shape {tuple(x.shape)}'
            )
        height, width = x.shape[-2:]
        if height < self.min_input_size or width < self.min_input_size:
            raise ValueError(
                f'input of {int(height)}x{int(width)} is too small for SLaK '
                f'with {self.num_stages} stages: both sides must be at least '
                f'{self.min_input_size} pixels (the stem and the downsampling '
                'layers are unpadded strided convs)'
            )

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            modules = [self.downsample_layers[i], self.stages[i]]
            if i in self.out_indices:
                modules.append(getattr(self, f'norm{i}'))
            for module in modules:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'SLaK':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def _default_decay_layers(self, num_layers: Optional[int]) -> int:
        """``num_layers``, or ConvNeXt's choice: 12 when stage 2 has more
        than 9 blocks (small, base), else 6 (tiny)."""
        if num_layers is not None:
            return int(num_layers)
        if self.num_stages < 3:
            raise ValueError(
                f'this SLaK has {self.num_stages} stages, not the four of '
                "ConvNeXt's layer rule: give num_layers"
            )
        return 12 if self.depths[2] > 9 else 6

    def _stage_and_block(
        self, param_name: str, prefix: str
    ) -> Optional[Tuple[str, int, int]]:
        """``('downsample_layers' | 'stages', stage, block)`` of a parameter
        of this backbone (block 0 for downsampling layers), else None."""
        if not param_name.startswith(prefix):
            return None
        parts = param_name[len(prefix) :].split('.')
        if parts[0] == 'downsample_layers':
            return parts[0], int(parts[1]), 0
        if parts[0] == 'stages':
            return parts[0], int(parts[1]), int(parts[2])
        return None

    def get_layer_depth(
        self,
        param_name: str,
        prefix: str = '',
        num_layers: Optional[int] = None,
    ) -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        mmpretrain's ``ConvNeXt.get_layer_depth`` rule on SLaK's module
        names, so mmpretrain's ``LearningRateDecayOptimWrapperConstructor``
        works on SLaK: the stem is layer 0, stage 0 layer 1, stage 1 (with
        its downsampling) layer 2, stage 2's downsampling layer 3 and its
        blocks split evenly over layers ``3 .. num_layers - 1``, the later
        stages (with their downsampling) layer ``num_layers``, and
        everything else (the output norms; parameters outside the backbone,
        i.e. not starting with ``prefix``) layer ``num_layers + 1``. With 9
        or 27 blocks in stage 2 and the default ``num_layers`` this is
        ConvNeXt's ``3 + block // 3``.

        Args:
            param_name (str): Parameter name, e.g.
                ``backbone.stages.2.4.pointwise_conv1.weight``.
            prefix (str): What precedes this backbone's parameter names in
                ``param_name``, e.g. ``'backbone.'``. Defaults to ''.
            num_layers (int, optional): Number of backbone layers (>= 4). By
                default ConvNeXt's: 12 if stage 2 has more than 9 blocks,
                else 6.

        Returns:
            tuple[int, int]: The layer id and the number of layer ids,
            ``num_layers + 2``; mmpretrain scales the learning rate by
            ``decay_rate ** (num_layer_ids - layer_id - 1)``.

        Raises:
            ValueError: If ``num_layers < 4`` or the backbone has fewer than
                three stages (the rule splits stage 2).
        """
        if self.num_stages < 3:
            raise ValueError(
                'layer-wise decay splits the blocks of stage 2; this SLaK '
                f'has {self.num_stages} stages'
            )
        num_layers = self._default_decay_layers(num_layers)
        if num_layers < 4:
            raise ValueError(
                f'layer_wise decay needs num_layers >= 4, got {num_layers}'
            )
        position = self._stage_and_block(param_name, prefix)
        if position is None:
            return num_layers + 1, num_layers + 2
        part, stage, block = position
        if stage == 0 and part == 'downsample_layers':
            layer_id = 0
        elif stage in (0, 1):
            layer_id = stage + 1
        elif stage == 2 and part == 'downsample_layers':
            layer_id = 3
        elif stage == 2:
            layer_id = 3 + block * (num_layers - 3) // self.depths[2]
        else:
            layer_id = num_layers
        return layer_id, num_layers + 2

    def get_stage_depth(
        self,
        param_name: str,
        prefix: str = '',
        num_layers: Optional[int] = None,
    ) -> Tuple[int, int]:
        """Stage id of a parameter for stage-wise learning-rate decay.

        mmseg's ConvNeXt stage rule (used by the released ADE20K recipe):
        every downsampling layer is 0, stage ``i`` is ``i + 1`` and
        everything else (output norms, parameters not under ``prefix``)
        ``num_layers + 1``.

        Args:
            param_name (str): Parameter name.
            prefix (str): What precedes this backbone's parameter names.
            num_layers (int, optional): As in :meth:`get_layer_depth`.

        Returns:
            tuple[int, int]: The stage id and ``num_layers + 2``, in the
            convention of :meth:`get_layer_depth`.
        """
        num_layers = self._default_decay_layers(num_layers)
        position = self._stage_and_block(param_name, prefix)
        if position is None:
            return num_layers + 1, num_layers + 2
        part, stage, _ = position
        stage_id = 0 if part == 'downsample_layers' else stage + 1
        return stage_id, num_layers + 2

    def switch_to_deploy(self) -> None:
        """Fuses every large-kernel module into its deploy form, in place."""
        for module in self.modules():
            if isinstance(module, LargeKernelConv):
                module.switch_to_deploy()
        self.deploy = True

    def init_weights(self) -> None:
        """Initialises the weights, loading ``Pretrained`` entries with
        :func:`load_slak_pretrained`.

        ``init_cfg`` may be one dict or a list (mmengine accepts both); every
        ``dict(type='Pretrained', ...)`` entry goes through the SLaK loader
        (released names converted, every shape checked, missing tensors an
        error) after the other entries have initialised the weights, as
        mmengine orders them. mmengine's own ``PretrainedInit`` would load a
        released checkpoint non-strictly, i.e. not at all.
        """
        pretrained, others = split_pretrained_entries(self.init_cfg)
        if not pretrained:
            super().init_weights()
            return
        original = self.init_cfg
        self.init_cfg = others or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        for entry in pretrained:
            if 'checkpoint' not in entry:
                raise KeyError(
                    f'init_cfg entry {entry} has no "checkpoint" path'
                )
            load_slak_pretrained(
                self,
                entry['checkpoint'],
                prefix=entry.get('prefix'),
                map_location=entry.get('map_location', 'cpu'),
            )
        self._is_init = True


def _default_init_cfg() -> List[dict]:
    """Truncated-normal convs and linears, unit LayerNorms, as ConvNeXt."""
    return [
        dict(
            type='TruncNormal',
            layer=['Conv2d', 'Linear'],
            std=0.02,
            bias=0.0,
        ),
        dict(type='Constant', layer=['LayerNorm'], val=1.0, bias=0.0),
    ]

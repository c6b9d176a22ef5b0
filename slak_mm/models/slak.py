"""The SLaK backbone (Sparse Large Kernel Network)."""

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from .backends import AUTO, UsesBackend, check_backend, get_backend
from .checkpoint import load_slak_pretrained
from .large_kernel import LargeKernelConv
from .layers import DropPath, LayerNorm2d
from .mlp import BlockMLP


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arch_lists(depths: Sequence, base_channels: Sequence) -> None:
    if not depths:
        raise ValueError(
            'arch has no stages: "depths" and "channels" are empty'
        )
    for name, values, low in (
        ('depths', depths, 0),
        ('channels', base_channels, 1),
    ):
        for value in values:
            if not _is_int(value) or value < low:
                raise ValueError(
                    f'arch {name!r} must hold ints >= {low}, got {values}'
                )


def _check_kernel_sizes(kernel_sizes, small_kernel) -> List[int]:
    if isinstance(kernel_sizes, (str, bytes)) or not isinstance(
        kernel_sizes, (list, tuple)
    ):
        raise TypeError(
            'kernel_sizes must be a list with one odd int per stage, e.g. '
            f'(51, 49, 47, 13), got {kernel_sizes!r}'
        )
    kernel_sizes = list(kernel_sizes)
    for name, values in (
        ('kernel_sizes', kernel_sizes),
        ('small_kernel', [small_kernel]),
    ):
        if not all(_is_int(size) for size in values):
            raise TypeError(f'{name} must hold ints, got {values}')
        if min(values, default=1) < 1:
            raise ValueError(f'{name} must be positive, got {values}')
    return kernel_sizes


def _check_width_factor(width_factor, base_channels: Sequence) -> None:
    if not isinstance(width_factor, (int, float)) or isinstance(
        width_factor, bool
    ):
        raise TypeError(
            f'width_factor must be a number, got {width_factor!r} '
            f'({type(width_factor).__name__})'
        )
    finite = math.isfinite(width_factor) and width_factor > 0
    widths = [int(c * width_factor) if finite else 0 for c in base_channels]
    if min(widths) < 1:
        raise ValueError(
            f'width_factor={width_factor} gives stage widths {widths}; '
            'every stage needs at least one channel'
        )


def _check_out_indices(out_indices) -> None:
    indices = [out_indices] if _is_int(out_indices) else out_indices
    if not isinstance(indices, (list, tuple)) or not all(
        _is_int(i) for i in indices
    ):
        raise TypeError(
            'out_indices must be an int or a list of ints, got '
            f'{out_indices!r}'
        )
    if not indices:
        raise ValueError(
            'out_indices is empty: the backbone would return nothing; give '
            'at least one stage index, e.g. (0, 1, 2, 3) or -1'
        )


def _check_backbone_args(
    depths: Sequence,
    base_channels: Sequence,
    kernel_sizes,
    small_kernel,
    width_factor,
    in_channels,
    out_indices,
    drop_path_rate,
) -> List[int]:
    """Checks the types and ranges of the SLaK constructor arguments.

    Returns:
        list[int]: ``kernel_sizes`` as a list.

    Raises:
        TypeError: If an argument has the wrong type (e.g. a string width
            factor or a single int for ``kernel_sizes``); names it.
        ValueError: If a value is out of range (an empty arch, a negative
            depth, a width factor that leaves no channel, ...); names it.
    """
    _check_arch_lists(depths, base_channels)
    kernel_sizes = _check_kernel_sizes(kernel_sizes, small_kernel)
    _check_width_factor(width_factor, base_channels)
    if not _is_int(in_channels) or in_channels < 1:
        raise ValueError(
            f'in_channels must be a positive int, got {in_channels!r}'
        )
    _check_out_indices(out_indices)
    if len(kernel_sizes) != len(depths):
        raise ValueError(
            f'kernel_sizes needs one size per stage ({len(depths)}), '
            f'got {kernel_sizes}; the small kernel goes in small_kernel'
        )
    if not 0 <= drop_path_rate < 1:
        raise ValueError(
            f'drop_path_rate must be in [0, 1), got {drop_path_rate}'
        )
    return kernel_sizes


class SLaKBlock(UsesBackend, nn.Module):
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
        backend (str): How the large-kernel convs and the MLP run, see
            :mod:`slak_mm.models.backends`. Defaults to ``'auto'``.

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
        backend: str = AUTO,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.backend = check_backend(backend)
        self.large_kernel = LargeKernelConv(
            channels,
            kernel_size,
            small_kernel,
            decompose=decompose,
            norm_cfg=norm_cfg,
            deploy=deploy,
            backend=backend,
        )
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        hidden = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(hidden, channels)
        # Runs the three layers above (they keep their state-dict names).
        self.mlp = BlockMLP(
            self.pointwise_conv1, self.act, self.pointwise_conv2
        )
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(
                layer_scale_init_value * torch.ones(channels)
            )
        else:
            self.gamma = None
        self.drop_path = DropPath(drop_path_rate)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = get_backend(self.backend, x.device)
        shortcut = x
        x = self.large_kernel(x, backend)
        # A free view when x is channels-last in memory (the fast paths),
        # a copy inside the norm otherwise (the reference path).
        x = x.permute(0, 2, 3, 1)
        x = backend.layer_norm(x, self.norm)
        x = self.mlp(x, backend)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


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

    arch_settings = {
        'tiny': {'depths': [3, 3, 9, 3], 'channels': [96, 192, 384, 768]},
        'small': {'depths': [3, 3, 27, 3], 'channels': [96, 192, 384, 768]},
        'base': {'depths': [3, 3, 27, 3], 'channels': [128, 256, 512, 1024]},
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base'}

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
        depths, base_channels = self._parse_arch(arch)
        self.num_stages = len(depths)
        kernel_sizes = _check_backbone_args(
            depths,
            base_channels,
            kernel_sizes,
            small_kernel,
            width_factor,
            in_channels,
            out_indices,
            drop_path_rate,
        )
        self.depths = depths
        self.channels = [int(c * width_factor) for c in base_channels]
        self.kernel_sizes = kernel_sizes
        self.small_kernel = small_kernel
        self.width_factor = width_factor
        self.decompose = decompose
        self.out_indices = self._parse_out_indices(out_indices)
        if not 0 <= frozen_stages <= self.num_stages:
            raise ValueError(
                f'frozen_stages must be in [0, {self.num_stages}]'
                f', got {frozen_stages}'
            )
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
            backend=backend,
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
        """One ``nn.Sequential`` of :class:`SLaKBlock` per stage, with the
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
                nn.Sequential(
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

    def _parse_arch(self, arch) -> Tuple[List[int], List[int]]:
        if isinstance(arch, str):
            name = self.arch_aliases.get(arch.lower(), arch.lower())
            if name not in self.arch_settings:
                raise ValueError(
                    f'Unknown SLaK arch {arch!r}; choose one of '
                    f'{sorted(self.arch_settings)} or their aliases '
                    f'{sorted(self.arch_aliases)}, or pass a dict with '
                    '"depths" and "channels"'
                )
            arch = self.arch_settings[name]
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch)}')
        missing = {'depths', 'channels'} - set(arch)
        if missing:
            raise ValueError(f'arch dict lacks keys {sorted(missing)}')
        for key in ('depths', 'channels'):
            if not isinstance(arch[key], (list, tuple)):
                raise TypeError(
                    f'arch {key!r} must be a list of ints, got {arch[key]!r}'
                )
        depths, channels = list(arch['depths']), list(arch['channels'])
        if len(depths) != len(channels):
            raise ValueError(
                f'arch depths {depths} and channels {channels} '
                'must have the same length'
            )
        return depths, channels

    def _parse_out_indices(self, out_indices) -> List[int]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            real = index % self.num_stages
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(
                    f'out_indices entry {index} is out of range '
                    f'for {self.num_stages} stages'
                )
            parsed.append(real)
        return sorted(set(parsed))

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
        if get_backend(self.backend, x.device).channels_last(x.device):
            # Kept through every layer: the depthwise convs are several
            # times faster and the block MLPs need no permute copies.
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i in range(self.num_stages):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean(dim=(-2, -1))))
                else:
                    # Necks and heads get the usual contiguous NCHW maps.
                    outs.append(norm(x).contiguous())
        return tuple(outs)

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
        entries = self.init_cfg
        if isinstance(entries, dict):
            entries = [entries]
        entries = list(entries or [])
        pretrained = [e for e in entries if _is_pretrained_entry(e)]
        if not pretrained:
            super().init_weights()
            return
        others = [e for e in entries if not _is_pretrained_entry(e)]
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


def _is_pretrained_entry(entry) -> bool:
    return isinstance(entry, dict) and entry.get('type') == 'Pretrained'

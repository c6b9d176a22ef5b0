"""The validated constructor settings of the SLaK backbone.

:class:`SLaKArchSettings` checks every shape argument of
:class:`~slak_mm.models.SLaK` when it is built and resolves the named
architectures, so the backbone builds from values known to be good. Each
check raises TypeError / ValueError naming the bad argument and its value.
"""

import math
from dataclasses import dataclass, field
from typing import List, Sequence, Union

#: Stage depths and base widths (before ``width_factor``) of the released
#: architectures.
ARCH_SETTINGS = {
    'tiny': {'depths': [3, 3, 9, 3], 'channels': [96, 192, 384, 768]},
    'small': {'depths': [3, 3, 27, 3], 'channels': [96, 192, 384, 768]},
    'base': {'depths': [3, 3, 27, 3], 'channels': [128, 256, 512, 1024]},
}
ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base'}


def is_int(value) -> bool:
    """True for ints, False for bools and everything else."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_rate(name: str, value: float) -> None:
    """Raises ValueError naming ``name`` unless ``0 <= value < 1`` (a
    stochastic depth rate)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f'{name} must be in [0, 1), got {value}')


def _parse_arch(arch) -> tuple:
    """``(depths, base_channels)`` of a named arch or an arch dict."""
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_SETTINGS:
            raise ValueError(
                f'Unknown SLaK arch {arch!r}; choose one of '
                f'{sorted(ARCH_SETTINGS)} or their aliases '
                f'{sorted(ARCH_ALIASES)}, or pass a dict with '
                '"depths" and "channels"'
            )
        arch = ARCH_SETTINGS[name]
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
    if not depths:
        raise ValueError(
            'arch has no stages: "depths" and "channels" are empty'
        )
    for name, values, low in (
        ('depths', depths, 0),
        ('channels', channels, 1),
    ):
        for value in values:
            if not is_int(value) or value < low:
                raise ValueError(
                    f'arch {name!r} must hold ints >= {low}, got {values}'
                )
    return depths, channels


@dataclass(frozen=True)
class SLaKArchSettings:
    """The shape arguments of :class:`~slak_mm.models.SLaK`, checked.

    Built with the arguments as given; checking normalises them (lists
    for sequences, ``out_indices`` as sorted non-negative stage indices)
    and fills in the derived fields.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (or ``'t'``,
            ``'s'``, ``'b'``), or a dict with ``depths`` and ``channels``
            (base widths, before ``width_factor``).
        kernel_sizes (Sequence[int]): Large kernel size of each stage.
        small_kernel (int): Small kernel size.
        width_factor (float): Multiplies the base widths (truncated with
            ``int()``).
        in_channels (int): Input channels.
        out_indices (int | Sequence[int]): Stages whose outputs are
            returned; negative indices count from the end.
        drop_path_rate (float): Stochastic depth rate of the last block,
            in [0, 1).
        frozen_stages (int): Stages to freeze, in [0, number of stages].

    Attributes:
        depths (list[int]): Blocks per stage.
        base_channels (list[int]): Widths before ``width_factor``.
        channels (list[int]): Stage widths.
        num_stages (int): Number of stages.

    Raises:
        TypeError: If an argument has the wrong type (e.g. a string width
            factor or a single int for ``kernel_sizes``); names it.
        ValueError: If a value is out of range (an empty arch, a negative
            depth, a width factor that leaves no channel, ...); names it.
    """

    arch: Union[str, dict] = 'tiny'
    kernel_sizes: Sequence[int] = (51, 49, 47, 13)
    small_kernel: int = 5
    width_factor: float = 1.3
    in_channels: int = 3
    out_indices: Union[int, Sequence[int]] = -1
    drop_path_rate: float = 0.0
    frozen_stages: int = 0
    depths: List[int] = field(init=False)
    base_channels: List[int] = field(init=False)
    channels: List[int] = field(init=False)

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def __post_init__(self) -> None:
        depths, base_channels = _parse_arch(self.arch)
        self._set('depths', depths)
        self._set('base_channels', base_channels)
        self._set('kernel_sizes', self._checked_kernel_sizes())
        self._set('channels', self._checked_channels())
        if not is_int(self.in_channels) or self.in_channels < 1:
            raise ValueError(
                f'in_channels must be a positive int, got {self.in_channels!r}'
            )
        indices = self._checked_out_index_list()
        if len(self.kernel_sizes) != len(depths):
            raise ValueError(
                f'kernel_sizes needs one size per stage ({len(depths)}), '
                f'got {self.kernel_sizes}; the small kernel goes in '
                'small_kernel'
            )
        check_rate('drop_path_rate', self.drop_path_rate)
        self._set('out_indices', self._stage_indices(indices))
        if not 0 <= self.frozen_stages <= self.num_stages:
            raise ValueError(
                f'frozen_stages must be in [0, {self.num_stages}]'
                f', got {self.frozen_stages}'
            )

    def _set(self, name: str, value) -> None:
        # The normalised value of a frozen field, set once while checking.
        object.__setattr__(self, name, value)

    def _checked_kernel_sizes(self) -> List[int]:
        kernel_sizes = self.kernel_sizes
        if isinstance(kernel_sizes, (str, bytes)) or not isinstance(
            kernel_sizes, (list, tuple)
        ):
            raise TypeError(
                'kernel_sizes must be a list with one odd int per stage, '
                f'e.g. (51, 49, 47, 13), got {kernel_sizes!r}'
            )
        kernel_sizes = list(kernel_sizes)
        for name, values in (
            ('kernel_sizes', kernel_sizes),
            ('small_kernel', [self.small_kernel]),
        ):
            if not all(is_int(size) for size in values):
                raise TypeError(f'{name} must hold ints, got {values}')
            if min(values, default=1) < 1:
                raise ValueError(f'{name} must be positive, got {values}')
        return kernel_sizes

    def _checked_channels(self) -> List[int]:
        width_factor = self.width_factor
        if not isinstance(width_factor, (int, float)) or isinstance(
            width_factor, bool
        ):
            raise TypeError(
                f'width_factor must be a number, got {width_factor!r} '
                f'({type(width_factor).__name__})'
            )
        finite = math.isfinite(width_factor) and width_factor > 0
        widths = [
            int(c * width_factor) if finite else 0 for c in self.base_channels
        ]
        if min(widths) < 1:
            raise ValueError(
                f'width_factor={width_factor} gives stage widths {widths}; '
                'every stage needs at least one channel'
            )
        return widths

    def _checked_out_index_list(self) -> List[int]:
        out_indices = self.out_indices
        indices = [out_indices] if is_int(out_indices) else out_indices
        if not isinstance(indices, (list, tuple)) or not all(
            is_int(i) for i in indices
        ):
            raise TypeError(
                'out_indices must be an int or a list of ints, got '
                f'{out_indices!r}'
            )
        if not indices:
            raise ValueError(
                'out_indices is empty: the backbone would return nothing; '
                'give at least one stage index, e.g. (0, 1, 2, 3) or -1'
            )
        return list(indices)

    def _stage_indices(self, indices: List[int]) -> List[int]:
        """Sorted, deduplicated, non-negative stage indices."""
        for index in indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(
                    f'out_indices entry {index} is out of range '
                    f'for {self.num_stages} stages'
                )
        return sorted({index % self.num_stages for index in indices})

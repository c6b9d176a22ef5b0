"""Which weights are maskable, how they group by stage, and how dense they
are: the one rule and the one count shared by sparse training's logging,
``tools/analysis_tools/sparsity_report.py`` and
``tools/analysis_tools/get_flops.py``.

Plain torch, no runner.
"""

import re
from collections import OrderedDict
from typing import Callable, Dict, Mapping, Sequence, Tuple

import torch

# Conv (out, in / groups, kh, kw) and linear (out, in) weights, as released.
MASKABLE_NDIMS = (2, 4)

# SLaK / ConvNeXt names, bare or under ``backbone.``: the stem is
# ``downsample_layers.0``; stage i is ``stages.i`` plus the downsampling
# layer in front of it (``downsample_layers.i``, i >= 1).
_STEM = re.compile(r'^(?:backbone\.)?downsample_layers\.0\.')
_STAGE = re.compile(r'^(?:backbone\.)?(?:downsample_layers|stages)\.(\d+)\.')
_OUT_NORM = re.compile(r'^(?:backbone\.)?norm\d+\.')

#: ``(kept, total)`` entries of a weight.
Count = Tuple[int, int]


def is_maskable(tensor: torch.Tensor) -> bool:
    """True for 2-D and 4-D tensors (linear and conv weights): what SLaK's
    sparse training masks. Biases and norms stay dense."""
    return torch.is_tensor(tensor) and tensor.dim() in MASKABLE_NDIMS


def stage_group(name: str) -> str:
    """The reporting group of a parameter or module name.

    ``'stem'`` for ``downsample_layers.0``, ``'stage<i>'`` for
    ``stages.i`` and ``downsample_layers.i`` (i >= 1, as in ConvNeXt),
    ``'out_norms'`` for the backbone's output norms, else the top-level
    module (``head``, ``neck``, ``decode_head``, ...). Names may start with
    ``backbone.``.
    """
    if _STEM.match(name):
        return 'stem'
    match = _STAGE.match(name)
    if match:
        return f'stage{match.group(1)}'
    if _OUT_NORM.match(name):
        return 'out_norms'
    return name.split('.')[0] if name else 'other'


def group_sort_key(group: str) -> Tuple[int, int, str]:
    """Orders groups stem, stage0, stage1, ..., out_norms, then the rest
    by name."""
    if group == 'stem':
        return (0, 0, group)
    if group.startswith('stage') and group[5:].isdigit():
        return (1, int(group[5:]), group)
    if group == 'out_norms':
        return (2, 0, group)
    return (3, 0, group)


def nonzero_counts(
    weights: Mapping[str, torch.Tensor],
) -> 'OrderedDict[str, Count]':
    """``(non-zero entries, entries)`` of each weight (a saved sparse
    model's density)."""
    return OrderedDict(
        (name, (int(torch.count_nonzero(w)), w.numel()))
        for name, w in weights.items()
    )


def mask_counts(
    shapes: Mapping[str, Sequence[int]], masks: Mapping[str, torch.Tensor]
) -> 'OrderedDict[str, Count]':
    """``(kept entries, entries)`` of each weight as masks count it.

    Args:
        shapes (Mapping[str, Sequence[int]]): Shape of every weight in the
            set, by name.
        masks (Mapping[str, Tensor]): Bool masks by name, shaped like their
            weights; a weight without a mask is dense (fully kept).

    Raises:
        ValueError: If a mask's shape differs from its weight's.
    """
    counts = OrderedDict()
    for name, shape in shapes.items():
        shape = tuple(shape)
        numel = 1
        for size in shape:
            numel *= size
        mask = masks.get(name)
        if mask is None:
            counts[name] = (numel, numel)
            continue
        if tuple(mask.shape) != shape:
            raise ValueError(
                f'mask of {name!r} has shape {tuple(mask.shape)}, the '
                f'weight {shape}'
            )
        counts[name] = (int(mask.sum()), numel)
    return counts


def overall_density(counts: Mapping[str, Count]) -> float:
    """Kept entries over entries, summed over ``counts``."""
    kept = sum(k for k, _ in counts.values())
    total = sum(t for _, t in counts.values())
    return kept / total if total else 1.0


def group_counts(
    counts: Mapping[str, Count],
    group_of: Callable[[str], str] = stage_group,
) -> 'OrderedDict[str, Count]':
    """``(kept, total)`` summed per group, in :func:`group_sort_key`
    order."""
    grouped: Dict[str, Count] = {}
    for name, (kept, total) in counts.items():
        group = group_of(name)
        old_kept, old_total = grouped.get(group, (0, 0))
        grouped[group] = (old_kept + kept, old_total + total)
    return OrderedDict(
        (group, grouped[group])
        for group in sorted(grouped, key=group_sort_key)
    )


def group_densities(
    counts: Mapping[str, Count],
    group_of: Callable[[str], str] = stage_group,
) -> 'OrderedDict[str, float]':
    """Kept fraction per group (see :func:`stage_group`)."""
    return OrderedDict(
        (group, kept / total if total else 1.0)
        for group, (kept, total) in group_counts(counts, group_of).items()
    )

"""Dense and sparse parameter and MAC counts of a (masked) model.

MACs are multiply-accumulates of convolutions and matrix products (linear
layers, matmul, einsum), counted by tracing with
:class:`mmengine.analysis.FlopAnalyzer`, as the paper and OpenMMLab's
``get_flops`` count "FLOPs". Norms, activations, pooling and additions are
not counted (mmengine's default would add the norms: SLaK-T 8.74G instead
of 8.70G).

Sparse figures follow actual masks: every conv/linear MAC uses one weight,
so a layer's sparse MACs are its dense MACs times the fraction of its weight
that is kept, and its sparse parameters are the kept entries.
"""

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.model import BaseModel

from slak_mm.models.backends import use_backend

#: mmengine FlopAnalyzer handles switched off so only MACs remain.
_NON_MAC_OPS = (
    'aten::batch_norm',
    'aten::group_norm',
    'aten::layer_norm',
    'aten::instance_norm',
    'aten::upsample_nearest2d',
    'aten::upsample_bilinear2d',
    'aten::adaptive_avg_pool2d',
    'aten::grid_sampler',
)

_STEM = re.compile(r'^(?:backbone\.)?downsample_layers\.0\.')
_STAGE = re.compile(r'^(?:backbone\.)?(?:downsample_layers|stages)\.(\d+)\.')
_OUT_NORM = re.compile(r'^(?:backbone\.)?norm\d+\.')


def slak_group(name: str) -> str:
    """Groups a parameter/module name into stem, stage<i>, norms or head.

    The downsampling layer in front of stage i counts towards stage i, as in
    ConvNeXt; other top-level parts (head, neck, decode_head, ...) are their
    own groups.
    """
    if _STEM.match(name):
        return 'stem'
    match = _STAGE.match(name)
    if match:
        return f'stage{match.group(1)}'
    if _OUT_NORM.match(name):
        return 'out_norms'
    return name.split('.')[0] if name else 'other'


@dataclass
class ComplexityReport:
    """Per-group and total counts; every figure is a plain number.

    Attributes:
        groups (dict[str, dict[str, float]]): For each group, ``params``,
            ``params_nonzero``, ``macs`` and ``macs_sparse``.
        input_shape (tuple[int]): The traced input's shape.
    """

    groups: Dict[str, Dict[str, float]] = field(default_factory=OrderedDict)
    input_shape: Sequence[int] = ()

    def total(self, key: str) -> float:
        """Sum of ``key`` over the groups."""
        return sum(group[key] for group in self.groups.values())

    def to_dict(self) -> dict:
        keys = ('params', 'params_nonzero', 'macs', 'macs_sparse')
        return dict(
            input_shape=list(self.input_shape),
            groups={name: dict(g) for name, g in self.groups.items()},
            total={k: self.total(k) for k in keys},
        )

    def table(self) -> str:
        """A text table in M params and G MACs."""
        header = (
            f'{"part":<12}{"params(M)":>11}{"non-zero(M)":>13}'
            f'{"MACs(G)":>10}{"sparse MACs(G)":>16}'
        )
        rows = [header, '-' * len(header)]
        items = list(self.groups.items()) + [
            (
                'total',
                {
                    k: self.total(k)
                    for k in (
                        'params',
                        'params_nonzero',
                        'macs',
                        'macs_sparse',
                    )
                },
            )
        ]
        for name, g in items:
            if name == 'total':
                rows.append('-' * len(header))
            rows.append(
                f'{name:<12}{g["params"] / 1e6:>11.3f}'
                f'{g["params_nonzero"] / 1e6:>13.3f}'
                f'{g["macs"] / 1e9:>10.3f}{g["macs_sparse"] / 1e9:>16.3f}'
            )
        return '\n'.join(rows)


class _TensorMode(nn.Module):
    """Traces an OpenMMLab model's ``mode='tensor'`` forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, mode='tensor')


def _no_macs(inputs, outputs) -> int:
    """FlopAnalyzer handle for ops that are not multiply-accumulates."""
    return 0


def _group_order(name: str):
    if name == 'stem':
        return (0, 0, name)
    if name.startswith('stage') and name[5:].isdigit():
        return (1, int(name[5:]), name)
    if name == 'out_norms':
        return (2, 0, name)
    return (3, 0, name)


def maskable_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every 2-D and 4-D parameter: what SLaK's sparse training masks."""
    return OrderedDict(
        (name, p) for name, p in model.named_parameters() if p.dim() in (2, 4)
    )


def masks_from_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Masks read off a (sparse) model's zeros: ``weight != 0``.

    Returns:
        dict[str, Tensor]: Boolean masks for every 2-D and 4-D parameter.
    """
    return OrderedDict(
        (name, p.detach() != 0) for name, p in maskable_weights(model).items()
    )


def uniform_masks(
    model: nn.Module, sparsity: float, seed: int = 0
) -> Dict[str, torch.Tensor]:
    """Random masks keeping ``round((1 - sparsity) * n)`` of each weight.

    Every 2-D and 4-D parameter gets the same density, the ``uniform``
    layer-wise distribution of sparse training.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f'sparsity must be in [0, 1), got {sparsity}')
    generator = torch.Generator().manual_seed(seed)
    masks = OrderedDict()
    for name, param in maskable_weights(model).items():
        keep = round((1 - sparsity) * param.numel())
        order = torch.randperm(param.numel(), generator=generator)
        mask = torch.zeros(param.numel(), dtype=torch.bool)
        mask[order[:keep]] = True
        masks[name] = mask.view(param.shape)
    return masks


def _check_masks(model: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            close = [p for p in params if p.endswith(name.split('.')[-1])][:3]
            raise KeyError(
                f'mask for {name!r} matches no parameter of the model '
                f'(e.g. {close})'
            )
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(
                f'mask for {name!r} has shape {tuple(mask.shape)}, the '
                f'parameter {tuple(params[name].shape)}'
            )
        if mask.dtype != torch.bool:
            raise TypeError(
                f'mask for {name!r} must be a bool tensor, got {mask.dtype}'
            )


def count_complexity(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    masks: Optional[Dict[str, torch.Tensor]] = None,
    group_fn: Callable[[str], str] = slak_group,
) -> ComplexityReport:
    """Counts parameters and MACs, dense and under ``masks``.

    Args:
        model (nn.Module): The model; OpenMMLab models are traced in
            ``mode='tensor'`` (no data preprocessor, no post-processing).
        input_shape (Sequence[int]): ``(C, H, W)`` of one image.
        masks (dict[str, Tensor], optional): ``{parameter name: bool
            tensor}``; unmasked parameters count as dense.
        group_fn (callable): Maps a parameter or module name to its group.

    Returns:
        ComplexityReport: Per-group counts for a batch of one.
    """
    masks = masks or {}
    _check_masks(model, masks)
    was_training = model.training
    model.eval()
    traced = _TensorMode(model) if isinstance(model, BaseModel) else model
    inputs = torch.zeros((1, *input_shape))
    analyzer = FlopAnalyzer(traced, inputs)
    # A None handle does not remove a default one in mmengine 0.10.7.
    analyzer.set_op_handle(**{op: _no_macs for op in _NON_MAC_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    # The paper charges the full kernels, as the model is defined; faster
    # backends crop kernels to the reachable window and fold branches.
    with use_backend(model, 'reference'):
        module_macs = analyzer.by_module()
    model.train(was_training)

    prefix = 'model.' if traced is not model else ''
    groups: Dict[str, Dict[str, float]] = OrderedDict()

    def group(name: str) -> Dict[str, float]:
        key = group_fn(name)
        if key not in groups:
            groups[key] = dict.fromkeys(
                ('params', 'params_nonzero', 'macs', 'macs_sparse'), 0.0
            )
        return groups[key]

    for name, param in model.named_parameters():
        entry = group(name)
        entry['params'] += param.numel()
        mask = masks.get(name)
        entry['params_nonzero'] += (
            param.numel() if mask is None else int(mask.sum())
        )

    for name, module in model.named_modules():
        # A module's own MACs: its total minus what its children did.
        total = module_macs.get(prefix + name if name else prefix.rstrip('.'))
        if not total:
            continue
        own = total - sum(
            module_macs.get(prefix + (f'{name}.' if name else '') + child, 0)
            for child, _ in module.named_children()
        )
        if own <= 0:
            continue
        mask = masks.get(f'{name}.weight' if name else 'weight')
        density = 1.0 if mask is None else float(mask.float().mean())
        entry = group(name)
        entry['macs'] += own
        entry['macs_sparse'] += own * density
    ordered = OrderedDict(
        (name, groups[name])
        for name in sorted(groups, key=_group_order)
        if any(groups[name].values())
    )
    report = ComplexityReport(groups=ordered, input_shape=tuple(input_shape))
    # Traced MACs must all be attributed to modules.
    attributed = report.total('macs')
    if abs(attributed - analyzer.total()) > 0.5:
        raise RuntimeError(
            f'attributed {attributed} of {analyzer.total()} MACs to modules'
        )
    return report


def stage_table(report: ComplexityReport) -> List[List[str]]:
    """The report as rows of strings (for CSV or markdown)."""
    rows = [['part', 'params', 'params_nonzero', 'macs', 'macs_sparse']]
    for name, g in report.groups.items():
        rows.append(
            [name]
            + [
                f'{g[k]:.0f}'
                for k in ('params', 'params_nonzero', 'macs', 'macs_sparse')
            ]
        )
    return rows

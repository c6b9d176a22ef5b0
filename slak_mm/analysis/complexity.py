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

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.model import BaseModel

from slak_mm.models.backends import use_backend
from slak_mm.sparse.density import (
    group_sort_key,
    is_maskable,
    mask_counts,
    stage_group,
)
from slak_mm.sparse.initialization import masks_from_weights

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

#: Groups a parameter/module name into stem, stage<i>, out_norms or the
#: top-level part (head, neck, ...): the grouping the sparse-training hook
#: logs and ``tools/analysis_tools/sparsity_report.py`` prints.
slak_group = stage_group

#: The four counts of every group.
_COUNT_KEYS = ('params', 'params_nonzero', 'macs', 'macs_sparse')


@dataclass
class ComplexityReport:
    """Per-group and total counts; every figure is a plain number.

    Attributes:
        groups (dict[str, dict[str, float]]): For each group, ``params``,
            ``params_nonzero``, ``macs`` and ``macs_sparse``.
        input_shape (tuple[int]): The traced input's shape.
        not_run (list[str]): Groups with parameters whose modules the traced
            forward never called (e.g. an auxiliary head that only runs in
            training): their MACs are not counted, not zero.
    """

    groups: Dict[str, Dict[str, float]] = field(default_factory=OrderedDict)
    input_shape: Sequence[int] = ()
    not_run: List[str] = field(default_factory=list)

    def total(self, key: str) -> float:
        """Sum of ``key`` over the groups."""
        return sum(group[key] for group in self.groups.values())

    def to_dict(self) -> dict:
        keys = _COUNT_KEYS
        return dict(
            input_shape=list(self.input_shape),
            groups={name: dict(g) for name, g in self.groups.items()},
            total={k: self.total(k) for k in keys},
            not_run=list(self.not_run),
        )

    def table(self) -> str:
        """A text table in M params and G MACs.

        Groups that did not run show ``-`` for their MACs and are explained
        under the table.
        """
        keys = _COUNT_KEYS
        items = list(self.groups.items())
        items.append(('total', {k: self.total(k) for k in keys}))
        width = max(12, max(len(name) for name, _ in items) + 2)
        header = (
            f'{"part":<{width}}{"params(M)":>11}{"non-zero(M)":>13}'
            f'{"MACs(G)":>10}{"sparse MACs(G)":>16}'
        )
        rows = [header, '-' * len(header)]
        for name, g in items:
            if name == 'total':
                rows.append('-' * len(header))
            if name in self.not_run:
                macs, sparse = f'{"-":>10}', f'{"-":>16}'
            else:
                macs = f'{g["macs"] / 1e9:>10.3f}'
                sparse = f'{g["macs_sparse"] / 1e9:>16.3f}'
            rows.append(
                f'{name:<{width}}{g["params"] / 1e6:>11.3f}'
                f'{g["params_nonzero"] / 1e6:>13.3f}{macs}{sparse}'
            )
        if self.not_run:
            rows.append(
                f'-: {", ".join(self.not_run)}: not run by the counted '
                'forward, so no MACs;\n   parameters are in the totals'
            )
        return '\n'.join(rows)


class _Forward(nn.Module):
    """Traces ``forward_fn(model, inputs)``."""

    def __init__(self, model: nn.Module, forward_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.forward_fn = forward_fn

    def forward(self, inputs: torch.Tensor):
        return self.forward_fn(self.model, inputs)


def tensor_mode_forward(model: nn.Module, inputs: torch.Tensor):
    """OpenMMLab models in ``mode='tensor'``, plain modules as they are."""
    if isinstance(model, BaseModel):
        return model(inputs, mode='tensor')
    return model(inputs)


def _no_macs(inputs, outputs) -> int:
    """FlopAnalyzer handle for ops that are not multiply-accumulates."""
    return 0


def maskable_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every 2-D and 4-D parameter: what SLaK's sparse training masks
    (:func:`slak_mm.sparse.is_maskable`)."""
    return OrderedDict(
        (name, p) for name, p in model.named_parameters() if is_maskable(p)
    )


def masks_from_model(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Masks read off a (sparse) model's zeros: ``weight != 0`` of each of
    its maskable weights (:func:`maskable_weights`; the rule on a mapping
    of weights is :func:`slak_mm.sparse.masks_from_weights`).

    Returns:
        dict[str, Tensor]: Boolean masks for every 2-D and 4-D parameter.
    """
    return OrderedDict(masks_from_weights(maskable_weights(model)))


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
    forward_fn: Optional[Callable] = None,
) -> ComplexityReport:
    """Counts parameters and MACs, dense and under ``masks``.

    Args:
        model (nn.Module): The model.
        input_shape (Sequence[int]): ``(C, H, W)`` of one image.
        masks (dict[str, Tensor], optional): ``{parameter name: bool
            tensor}``; unmasked parameters count as dense.
        group_fn (callable): Maps a parameter or module name to its group.
        forward_fn (callable, optional): ``forward_fn(model, inputs)`` is
            what gets traced, e.g. ``lambda m, x: m.extract_feat(x)`` for a
            detector's backbone and neck. By default
            :func:`tensor_mode_forward`: OpenMMLab models in
            ``mode='tensor'`` (no data preprocessor, no post-processing).

    Returns:
        ComplexityReport: Per-group counts for a batch of one. Groups whose
        modules the forward never called are listed in ``not_run``.
    """
    masks = masks or {}
    _check_masks(model, masks)
    module_macs, traced_total, called = _trace_module_macs(
        model, input_shape, forward_fn or tensor_mode_forward
    )
    groups = _group_counts(model, masks, module_macs, group_fn)
    ordered = OrderedDict(
        (name, groups[name])
        for name in sorted(groups, key=group_sort_key)
        if any(groups[name].values())
    )
    ran = {group_fn(name) for name in called}
    not_run = [
        name
        for name, g in ordered.items()
        if g['params'] and not g['macs'] and name not in ran
    ]
    report = ComplexityReport(
        groups=ordered, input_shape=tuple(input_shape), not_run=not_run
    )
    # Traced MACs must all be attributed to modules.
    attributed = report.total('macs')
    if abs(attributed - traced_total) > 0.5:
        raise RuntimeError(
            f'attributed {attributed} of {traced_total} MACs to modules'
        )
    return report


def _trace_module_macs(
    model: nn.Module, input_shape: Sequence[int], forward_fn: Callable
) -> Tuple[Dict[str, int], int, set]:
    """Traces ``forward_fn(model, zeros(1, *input_shape))`` in eval mode.

    Returns:
        tuple: MACs by module name (prefixed ``model.``, as the traced
        wrapper names them, children included), the traced total, and the
        names of the parameters of every module the forward called.
    """
    was_training = model.training
    model.eval()
    traced = _Forward(model, forward_fn)
    inputs = torch.zeros((1, *input_shape))
    analyzer = FlopAnalyzer(traced, inputs)
    # A None handle does not remove a default one in mmengine 0.10.7.
    analyzer.set_op_handle(**{op: _no_macs for op in _NON_MAC_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    called = set()
    handles = [
        module.register_forward_pre_hook(
            lambda module, args, prefix=f'{name}.' if name else '': (
                called.update(
                    prefix + p
                    for p, _ in module.named_parameters(recurse=False)
                )
            )
        )
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]
    try:
        # The paper charges the full kernels, as the model is defined; faster
        # backends crop kernels to the reachable window and fold branches.
        with use_backend(model, 'reference'):
            module_macs = analyzer.by_module()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return module_macs, analyzer.total(), called


def _group_counts(
    model: nn.Module,
    masks: Dict[str, torch.Tensor],
    module_macs: Dict[str, int],
    group_fn: Callable[[str], str],
) -> Dict[str, Dict[str, float]]:
    """Dense and kept parameters and MACs per group (unordered).

    A module's own MACs are its traced total minus its children's; its
    sparse MACs scale them by the kept fraction of its ``weight``.
    """
    prefix = 'model.'
    groups: Dict[str, Dict[str, float]] = OrderedDict()

    def group(name: str) -> Dict[str, float]:
        key = group_fn(name)
        if key not in groups:
            groups[key] = dict.fromkeys(_COUNT_KEYS, 0.0)
        return groups[key]

    shapes = OrderedDict((n, p.shape) for n, p in model.named_parameters())
    for name, (kept, total) in mask_counts(shapes, masks).items():
        entry = group(name)
        entry['params'] += total
        entry['params_nonzero'] += kept

    for name, module in model.named_modules():
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
    return groups

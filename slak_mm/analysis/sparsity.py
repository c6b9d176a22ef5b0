"""Per-layer density of a checkpoint's weights, as a table and a plot.

The maskable-weight rule, the stage grouping and the counting are
:mod:`slak_mm.sparse.density`'s, shared with the sparse-training hook's
logging and ``tools/analysis_tools/get_flops.py``.
"""

import csv
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set

import torch

from slak_mm.sparse import CHECKPOINT_KEY
from slak_mm.sparse import density as shared


@dataclass
class LayerDensity:
    """Density of one weight tensor.

    Attributes:
        name (str): State dict key.
        shape (tuple[int]): Tensor shape.
        numel (int): Number of entries.
        nonzero (int): Number of non-zero entries.
    """

    name: str
    shape: Sequence[int]
    numel: int
    nonzero: int

    @property
    def density(self) -> float:
        return self.nonzero / self.numel if self.numel else 0.0


def layer_densities(
    state_dict: Dict[str, torch.Tensor], dims: Optional[Sequence[int]] = None
) -> List[LayerDensity]:
    """Densities of every maskable weight (or of every tensor with
    ``dim()`` in ``dims``).

    By default the 2-D and 4-D weights (:func:`slak_mm.sparse.is_maskable`):
    the convs and linears that SLaK's sparse training masks; biases and
    norms are dense by construction.
    """
    if dims is None:
        selected = {
            n: v for n, v in state_dict.items() if shared.is_maskable(v)
        }
    else:
        selected = {
            n: v
            for n, v in state_dict.items()
            if torch.is_tensor(v) and v.dim() in dims
        }
    if not selected:
        wanted = list(dims or shared.MASKABLE_NDIMS)
        raise ValueError(f'no {wanted}-D tensors in the state dict')
    return [
        LayerDensity(name, tuple(selected[name].shape), total, nonzero)
        for name, (nonzero, total) in shared.nonzero_counts(selected).items()
    ]


def _counts(rows: Sequence[LayerDensity]) -> Dict[str, shared.Count]:
    return OrderedDict((r.name, (r.nonzero, r.numel)) for r in rows)


def density_of_rows(rows: Sequence[LayerDensity]) -> float:
    """Non-zeros over entries across all rows (the rule on ``(kept,
    total)`` counts is :func:`slak_mm.sparse.overall_density`)."""
    return shared.overall_density(_counts(rows))


def stage_densities(rows: Sequence[LayerDensity]) -> Dict[str, float]:
    """Non-zero fraction per stage group (``stem``, ``stage<i>``, ...; the
    groups the sparse-training hook logs and ``get_flops`` reports)."""
    return dict(shared.group_densities(_counts(rows)))


def default_module_path(
    state_dict: Dict[str, torch.Tensor], sparse_state: Optional[dict] = None
) -> str:
    """The module whose weights sparse training masked, as a name prefix.

    Args:
        state_dict (dict[str, Tensor]): The checkpoint's weights.
        sparse_state (dict, optional): ``SparseTrainingHook``'s checkpoint
            entry (``sparse_training``), which records its ``module_path``.

    Returns:
        str: The hook's ``module_path`` when recorded; else ``'backbone'``
        when the weights have ``backbone.`` keys (the hook's default); else
        ``''``, the whole model (e.g. a released ImageNet checkpoint, whose
        sparse training masked the head too).
    """
    if sparse_state is not None and 'module_path' in sparse_state:
        return sparse_state['module_path'] or ''
    if any(key.startswith('backbone.') for key in state_dict):
        return 'backbone'
    return ''


def select_rows(
    rows: Sequence[LayerDensity], module_path: str
) -> List[LayerDensity]:
    """The rows under ``module_path`` (``''``: all rows)."""
    if not module_path:
        return list(rows)
    prefix = module_path.rstrip('.') + '.'
    return [r for r in rows if r.name.startswith(prefix)]


def mask_density(
    rows: Sequence[LayerDensity],
    masks: Dict[str, torch.Tensor],
    module_path: str = '',
) -> float:
    """Kept fraction over ``rows`` as saved masks count it.

    Layers without a mask are dense (``SparseTrainingHook`` keeps no mask
    for a layer it left dense), as in the hook's logged density.

    Args:
        rows (Sequence[LayerDensity]): The masked set.
        masks (dict[str, Tensor]): Bool masks named relative to
            ``module_path``.
        module_path (str): Prefix of the mask names in ``rows``.
    """
    prefix = module_path.rstrip('.') + '.' if module_path else ''
    shapes = OrderedDict((r.name[len(prefix) :], r.shape) for r in rows)
    try:
        counts = shared.mask_counts(shapes, masks)
    except ValueError as err:
        raise ValueError(f'saved {err} (under {module_path!r})') from None
    return shared.overall_density(counts)


def format_table(
    rows: Sequence[LayerDensity], masked: Optional[Set[str]] = None
) -> str:
    """A fixed-width text table, one line per layer, then the total.

    Args:
        rows (Sequence[LayerDensity]): One per weight.
        masked (set[str], optional): Names in the masked set; they get a
            ``*`` after the name.
    """
    masked = masked or set()
    width = max(len(r.name) for r in rows) + (1 if masked else 0)
    header = f'{"layer":<{width}}  {"shape":<18}{"numel":>10}{"density":>9}'
    lines = [header, '-' * len(header)]
    for r in rows:
        shape = 'x'.join(str(s) for s in r.shape)
        name = r.name + ('*' if r.name in masked else '')
        lines.append(
            f'{name:<{width}}  {shape:<18}{r.numel:>10}{r.density:>9.4f}'
        )
    lines.append('-' * len(header))
    total = sum(r.numel for r in rows)
    lines.append(
        f'{"total":<{width}}  {"":<18}{total:>10}{density_of_rows(rows):>9.4f}'
    )
    return '\n'.join(lines)


def plot_densities(
    rows: Sequence[LayerDensity], filename: str, title: Optional[str] = None
) -> None:
    """Bar chart of the per-layer densities (one bar per layer, in order)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    height = max(3.0, 0.14 * len(rows) + 1.0)
    fig, ax = plt.subplots(figsize=(9, height), dpi=100)
    positions = range(len(rows))
    ax.barh(positions, [r.density for r in rows], color='tab:blue')
    ax.set_yticks(list(positions))
    ax.set_yticklabels([r.name for r in rows], fontsize=5)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel('density (non-zero fraction)')
    ax.axvline(density_of_rows(rows), color='tab:red', linestyle='--')
    ax.set_title(title or f'overall density {density_of_rows(rows):.4f}')
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    fig.savefig(filename, bbox_inches='tight')
    plt.close(fig)


@dataclass
class CheckpointDensity:
    """Densities of a checkpoint, as ``sparsity_report`` prints them.

    Attributes:
        filename (str): The checkpoint.
        rows (list[LayerDensity]): Every 2-D/4-D weight.
        masked (list[LayerDensity]): The rows under ``module_path``.
        module_path (str): The masked set's module (``''``: whole model).
        saved_mask_density (float, optional): The masked set's density as
            the sparse-training hook's saved masks count it (None when the
            file has no masks for this ``module_path``).
    """

    filename: str
    rows: List[LayerDensity]
    masked: List[LayerDensity]
    module_path: str
    saved_mask_density: Optional[float] = None

    def summary(self) -> str:
        """Per-layer table, then the masked-set and whole-model totals."""
        subset = len(self.masked) < len(self.rows)
        masked_names = {r.name for r in self.masked}
        where = self.module_path or 'the whole model'
        density = density_of_rows(self.masked)
        by_group = stage_densities(self.masked)
        lines = [
            format_table(self.rows, masked=masked_names if subset else None),
            f'Masked set ({where}, {len(self.masked)} layers'
            + (', marked *' if subset else '')
            + f'): density {density:.4f} (sparsity {1 - density:.4f})',
            '  per group: '
            + ', '.join(f'{g} {value:.4f}' for g, value in by_group.items()),
        ]
        if self.saved_mask_density is not None:
            lines.append(
                f'  by the saved {CHECKPOINT_KEY} masks: density '
                f'{self.saved_mask_density:.4f} (what SparseTrainingHook '
                'logs)'
            )
        whole = density_of_rows(self.rows)
        lines.append(
            f'Whole model ({len(self.rows)} layers): density {whole:.4f} '
            f'(sparsity {1 - whole:.4f})'
        )
        return '\n'.join(lines)

    def save(self, out_dir: str) -> None:
        """Writes ``density.csv`` (one row per weight, ``masked`` 0/1) and
        the ``density.png`` bar chart."""
        masked_names = {r.name for r in self.masked}
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, 'density.csv'), 'w') as f:
            writer = csv.writer(f)
            writer.writerow(
                ['layer', 'shape', 'numel', 'nonzero', 'density', 'masked']
            )
            for r in self.rows:
                writer.writerow(
                    [
                        r.name,
                        'x'.join(map(str, r.shape)),
                        r.numel,
                        r.nonzero,
                        f'{r.density:.6f}',
                        int(r.name in masked_names),
                    ]
                )
        plot_densities(
            self.rows,
            os.path.join(out_dir, 'density.png'),
            os.path.basename(self.filename),
        )


def checkpoint_density(
    filename: str,
    state_key: Optional[str] = None,
    module_path: Optional[str] = None,
) -> CheckpointDensity:
    """Reads a checkpoint and measures the density of its weights.

    Args:
        filename (str): OpenMMLab (``state_dict``) or released (``model``)
            checkpoint.
        state_key (str, optional): Another entry to read, e.g.
            ``'model_ema'``.
        module_path (str, optional): The masked set's module; by default
            :func:`default_module_path`.

    Raises:
        ValueError: If no 2-D/4-D weight lies under ``module_path``.
    """
    from ..utils.checkpoint import extract_state_dict, safe_torch_load

    checkpoint = safe_torch_load(filename)
    state_dict = extract_state_dict(checkpoint, filename, state_key)
    sparse_state = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(sparse_state, dict):
        sparse_state = None
    if module_path is None:
        module_path = default_module_path(state_dict, sparse_state)
    rows = layer_densities(state_dict)
    masked = select_rows(rows, module_path)
    if not masked:
        raise ValueError(
            f'{filename}: no 2-D/4-D weights under {module_path!r}; pass '
            "--module-path ('' = whole model)"
        )
    saved = None
    if sparse_state is not None and 'masks' in sparse_state:
        saved_path = sparse_state.get('module_path', '') or ''
        if saved_path == module_path:
            saved = mask_density(masked, sparse_state['masks'], saved_path)
    return CheckpointDensity(filename, rows, masked, module_path, saved)

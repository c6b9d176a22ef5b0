"""Per-layer density of a checkpoint's weights, as a table and a plot."""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch


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
    state_dict: Dict[str, torch.Tensor], dims: Sequence[int] = (2, 4)
) -> List[LayerDensity]:
    """Densities of every weight with ``dim()`` in ``dims``.

    The default covers the convs and linears that SLaK's sparse training
    masks; biases and norms are dense by construction.
    """
    rows = []
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.dim() in dims:
            rows.append(
                LayerDensity(
                    name,
                    tuple(value.shape),
                    value.numel(),
                    int(torch.count_nonzero(value)),
                )
            )
    if not rows:
        raise ValueError(f'no {list(dims)}-D tensors in the state dict')
    return rows


def overall_density(rows: Sequence[LayerDensity]) -> float:
    """Non-zeros over entries across all rows."""
    return sum(r.nonzero for r in rows) / sum(r.numel for r in rows)


def format_table(rows: Sequence[LayerDensity]) -> str:
    """A fixed-width text table, one line per layer, then the total."""
    width = max(len(r.name) for r in rows)
    header = f'{"layer":<{width}}  {"shape":<18}{"numel":>10}{"density":>9}'
    lines = [header, '-' * len(header)]
    for r in rows:
        shape = 'x'.join(str(s) for s in r.shape)
        lines.append(
            f'{r.name:<{width}}  {shape:<18}{r.numel:>10}{r.density:>9.4f}'
        )
    lines.append('-' * len(header))
    total = sum(r.numel for r in rows)
    lines.append(
        f'{"total":<{width}}  {"":<18}{total:>10}{overall_density(rows):>9.4f}'
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
    ax.axvline(overall_density(rows), color='tab:red', linestyle='--')
    ax.set_title(title or f'overall density {overall_density(rows):.4f}')
    os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    fig.savefig(filename, bbox_inches='tight')
    plt.close(fig)

"""Initial masks: layer-wise densities (SNIP, ERK, uniform) or zeros of a
sparse checkpoint.

Plain torch, no runner.
"""

import math
from typing import Dict, Mapping, Optional

import torch

INIT_MODES = ('snip', 'erk', 'uniform', 'from_weights')


def seeded_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for draw number ``index`` of a run seeded ``seed``.

    Index 0 is the initial mask, index u the u-th mask update, so a resumed
    run draws exactly what an uninterrupted one would.
    """
    generator = torch.Generator()
    generator.manual_seed((int(seed) * 1_000_003 + int(index)) % 2**63)
    return generator


# The release leaves a layer dense when its drawn initial density is at
# least this (after SNIP, ERK or uniform; ``sparse_core.Masking.init``).
DENSE_LAYER_DENSITY = 0.99


def is_real_number(value) -> bool:
    """True for int and float values, False for bool, str, None, ..."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_sparsity(sparsity: float) -> None:
    """Raises TypeError for a non-number and ValueError unless
    ``0 <= sparsity < 1``."""
    if not is_real_number(sparsity):
        raise TypeError(
            'sparsity must be a number in [0, 1) (the pruned fraction), '
            f'got {sparsity!r} ({type(sparsity).__name__})'
        )
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f'sparsity must lie in [0, 1) (the pruned fraction), got '
            f'{sparsity}'
        )


def uniform_densities(
    shapes: Mapping[str, torch.Size], density: float
) -> Dict[str, float]:
    """The same density for every layer."""
    return {name: density for name in shapes}


def erk_densities(
    shapes: Mapping[str, torch.Size], density: float, power: float = 1.0
) -> Dict[str, float]:
    """Erdos-Renyi-Kernel densities (RigL; as in the SLaK release).

    Layer l gets ``eps * (sum(shape_l) / prod(shape_l)) ** power`` with
    ``eps`` chosen so the overall density is ``density``; layers whose
    value would exceed 1 are made dense and ``eps`` is solved again.

    Args:
        shapes (Mapping[str, torch.Size]): Parameter shapes by name.
        density (float): Overall kept fraction in (0, 1].
        power (float): ERK power scale. Defaults to 1.

    Returns:
        dict[str, float]: Density of each layer, 1.0 for dense ones.
    """
    dense = set()
    while True:
        budget = 0.0  # non-zeros left for the non-dense layers
        weighted = 0.0
        raw = {}
        for name, shape in shapes.items():
            numel = math.prod(shape)
            if name in dense:
                budget -= numel * (1 - density)
            else:
                budget += numel * density
                raw[name] = (sum(shape) / numel) ** power
                weighted += raw[name] * numel
        if not raw:
            return {name: 1.0 for name in shapes}
        epsilon = budget / weighted
        largest = max(raw.values())
        if largest * epsilon <= 1:
            break
        dense.update(n for n, r in raw.items() if r == largest)
    return {
        name: 1.0 if name in dense else epsilon * raw[name] for name in shapes
    }


def snip_densities(
    scores: Mapping[str, torch.Tensor], density: float
) -> Dict[str, float]:
    """Layer densities from a global top-k of SNIP scores, as released.

    With ``k = int(density * n)`` over all ``n`` scores, the threshold is
    the k-th largest score, and each layer's density is the fraction of its
    scores strictly above it (the release's ``SNIP``); the masks are then
    drawn at random at those densities.

    Args:
        scores (Mapping[str, Tensor]): ``|w * grad|`` of each layer, any
            shape.
        density (float): Overall kept fraction in (0, 1].

    Returns:
        dict[str, float]: Density of each layer.
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float() for n in names])
    num_keep = min(flat.numel(), max(1, int(density * flat.numel())))
    # The k-th largest score (the release sorts a top-k for it).
    threshold = torch.kthvalue(flat, flat.numel() - num_keep + 1).values
    return {
        n: (scores[n].detach().float() > threshold).sum().item()
        / scores[n].numel()
        for n in names
    }


def random_masks(
    shapes: Mapping[str, torch.Size],
    densities: Mapping[str, float],
    generator: torch.Generator,
) -> Dict[str, torch.Tensor]:
    """Random masks with exactly ``round(density * numel)`` kept positions.

    At least one position is kept per layer: an all-zero layer would cut
    the network and, having no weights, could never regrow by magnitude.

    Returns:
        dict[str, Tensor]: Bool masks on CPU shaped like ``shapes``.
    """
    masks = {}
    for name, shape in shapes.items():
        numel = math.prod(shape)
        num_keep = min(numel, max(1, round(densities[name] * numel)))
        order = torch.randperm(numel, generator=generator)
        mask = torch.zeros(numel, dtype=torch.bool)
        mask[order[:num_keep]] = True
        masks[name] = mask.view(shape)
    return masks


def masks_from_weights(
    weights: Mapping[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """Masks that keep the non-zero weights of a sparse checkpoint."""
    return {name: w.detach() != 0 for name, w in weights.items()}


def drop_dense(
    masks: Mapping[str, torch.Tensor], min_density: float = 1.0
) -> Dict[str, torch.Tensor]:
    """Leaves out masks whose kept fraction is ``min_density`` or more.

    Args:
        masks (Mapping[str, Tensor]): Bool masks by name.
        min_density (float): Masks keeping at least this fraction are
            dropped (the layer stays dense). 1.0 drops only full masks;
            the release uses :data:`DENSE_LAYER_DENSITY` (0.99).
    """
    return {
        name: m
        for name, m in masks.items()
        if not int(m.sum()) / m.numel() >= min_density
    }


def initial_masks(
    weights: Mapping[str, torch.Tensor],
    mode: str,
    sparsity: float,
    generator: torch.Generator,
    snip_scores: Optional[Mapping[str, torch.Tensor]] = None,
    erk_power: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """Builds the initial masks, dense layers left out.

    As released, a layer whose drawn mask keeps 99% or more of it
    (:data:`DENSE_LAYER_DENSITY`) stays dense (``'snip'``, ``'erk'``,
    ``'uniform'``). ``'from_weights'`` only leaves out layers without any
    zero, so a sparse checkpoint's zeros are all kept.

    Args:
        weights (Mapping[str, Tensor]): The parameters to mask by name.
        mode (str): ``'snip'``, ``'erk'``, ``'uniform'`` or
            ``'from_weights'`` (``weight != 0``; ``sparsity`` unused).
        sparsity (float): Pruned fraction over all of ``weights``, in
            [0, 1).
        generator (Generator): CPU generator for the random masks.
        snip_scores (Mapping[str, Tensor], optional): ``|w * grad|`` per
            name, needed for ``'snip'``.
        erk_power (float): ERK power scale.

    Returns:
        dict[str, Tensor]: Bool masks on the weights' devices.

    Raises:
        ValueError: For an unknown mode, a sparsity outside [0, 1), or
            ``'snip'`` without scores.
    """
    if mode not in INIT_MODES:
        raise ValueError(
            f'unknown sparse init mode {mode!r}; expected one of '
            f'{", ".join(INIT_MODES)}'
        )
    check_sparsity(sparsity)
    if mode == 'from_weights':
        return drop_dense(masks_from_weights(weights))
    shapes = {name: w.shape for name, w in weights.items()}
    density = 1.0 - sparsity
    if mode == 'uniform':
        densities = uniform_densities(shapes, density)
    elif mode == 'erk':
        densities = erk_densities(shapes, density, erk_power)
    else:
        if snip_scores is None:
            raise ValueError("init mode 'snip' needs snip_scores")
        densities = snip_densities(snip_scores, density)
    masks = random_masks(shapes, densities, generator)
    return drop_dense(
        {name: m.to(weights[name].device) for name, m in masks.items()},
        DENSE_LAYER_DENSITY,
    )

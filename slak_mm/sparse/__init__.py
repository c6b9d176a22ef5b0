"""Sparse training for SLaK: masks and their algorithms in plain torch,
and the mmengine hooks (registered in mmengine's root ``HOOKS``) that apply
them during training."""

from .hooks import SparseTrainingHook, StaticSparsityHook
from .initialization import (
    INIT_MODES,
    erk_densities,
    initial_masks,
    masks_from_weights,
    random_masks,
    seeded_generator,
    snip_densities,
    uniform_densities,
)
from .masking import (
    MaskState,
    broadcast_masks,
    resolve_module,
    select_maskable_parameters,
)
from .update import (
    GROWTH_MODES,
    cosine_prune_rate,
    grow,
    growth_scores,
    magnitude_prune,
    prune_and_regrow,
)

__all__ = [
    'GROWTH_MODES',
    'INIT_MODES',
    'MaskState',
    'SparseTrainingHook',
    'StaticSparsityHook',
    'broadcast_masks',
    'cosine_prune_rate',
    'erk_densities',
    'grow',
    'growth_scores',
    'initial_masks',
    'magnitude_prune',
    'masks_from_weights',
    'prune_and_regrow',
    'random_masks',
    'resolve_module',
    'seeded_generator',
    'select_maskable_parameters',
    'snip_densities',
    'uniform_densities',
]

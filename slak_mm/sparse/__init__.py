"""Sparse training for SLaK in plain torch (no mmengine needed).

:class:`DynamicSparsity` owns the masks, the step counting, the update
schedule and the checkpoint state; the functions below are its parts. The
mmengine hooks that drive it (``SparseTrainingHook``, ``StaticSparsityHook``)
live in :mod:`slak_mm.engine.hooks`, a layer above: this package imports
nothing of the runner glue (see docs/architecture.md).
"""

from .checks import CHECKPOINT_KEY
from .controller import DynamicSparsity
from .density import (
    MASKABLE_NDIMS,
    group_densities,
    is_maskable,
    mask_counts,
    nonzero_counts,
    overall_density,
    stage_group,
)
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
from .snip import snip_scores
from .update import (
    GROWTH_MODES,
    cosine_prune_rate,
    grow,
    growth_scores,
    magnitude_prune,
    prune_and_regrow,
)

__all__ = [
    'CHECKPOINT_KEY',
    'DynamicSparsity',
    'GROWTH_MODES',
    'INIT_MODES',
    'MASKABLE_NDIMS',
    'MaskState',
    'broadcast_masks',
    'cosine_prune_rate',
    'erk_densities',
    'group_densities',
    'grow',
    'growth_scores',
    'initial_masks',
    'is_maskable',
    'magnitude_prune',
    'mask_counts',
    'masks_from_weights',
    'nonzero_counts',
    'overall_density',
    'prune_and_regrow',
    'random_masks',
    'resolve_module',
    'seeded_generator',
    'select_maskable_parameters',
    'snip_densities',
    'snip_scores',
    'stage_group',
    'uniform_densities',
]

"""Analysis: complexity (:mod:`.complexity`, :mod:`.flops` for
``get_flops``), effective receptive field (:mod:`.erf`), checkpoint
densities (:mod:`.sparsity`) and the CPU and CUDA benchmarks
(:mod:`.benchmark`, :mod:`.cuda_benchmark`, sharing :mod:`.timing`): the
logic of ``tools/analysis_tools/``."""

from .complexity import (
    ComplexityReport,
    count_complexity,
    masks_from_model,
    uniform_masks,
)
from .erf import accumulate_erf, area_ratios, high_contribution_area
from .sparsity import density_of_rows, layer_densities

__all__ = [
    'ComplexityReport',
    'accumulate_erf',
    'area_ratios',
    'count_complexity',
    'density_of_rows',
    'high_contribution_area',
    'layer_densities',
    'masks_from_model',
    'uniform_masks',
]

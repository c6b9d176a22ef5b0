from .layer_decay import (
    SLaKLearningRateDecayOptimizerConstructor,
    get_slak_layer_id,
    get_slak_stage_id,
)
from .runner import StrictLoadingRunner

__all__ = [
    'SLaKLearningRateDecayOptimizerConstructor',
    'get_slak_layer_id',
    'get_slak_stage_id',
    'StrictLoadingRunner',
]

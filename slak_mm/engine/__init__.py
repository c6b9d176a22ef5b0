from .layer_decay import (
    SLaKLearningRateDecayOptimizerConstructor,
    get_slak_layer_id,
    get_slak_stage_id,
)
from .optim_wrapper import CPUAmpOptimWrapper

__all__ = [
    'CPUAmpOptimWrapper',
    'SLaKLearningRateDecayOptimizerConstructor',
    'get_slak_layer_id',
    'get_slak_stage_id',
]

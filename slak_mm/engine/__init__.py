from .hooks import SparseTrainingHook, StaticSparsityHook
from .layer_decay import (
    SLaKLearningRateDecayOptimizerConstructor,
    get_slak_layer_id,
    get_slak_stage_id,
)
from .runner import StrictLoadingRunner
from .seg_label_check import SegLabelCheckHook, find_label_problems

__all__ = [
    'SLaKLearningRateDecayOptimizerConstructor',
    'SegLabelCheckHook',
    'SparseTrainingHook',
    'StaticSparsityHook',
    'find_label_problems',
    'get_slak_layer_id',
    'get_slak_stage_id',
    'StrictLoadingRunner',
]

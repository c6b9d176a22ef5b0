from .hooks import SparseTrainingHook, StaticSparsityHook
from .layer_decay import SLaKLearningRateDecayOptimizerConstructor
from .optim_wrapper import CPUAmpOptimWrapper
from .runner import StrictLoadingRunner
from .seg_label_check import SegLabelCheckHook, find_label_problems

__all__ = [
    'CPUAmpOptimWrapper',
    'SLaKLearningRateDecayOptimizerConstructor',
    'SegLabelCheckHook',
    'SparseTrainingHook',
    'StaticSparsityHook',
    'find_label_problems',
    'StrictLoadingRunner',
]

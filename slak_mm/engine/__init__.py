from .atomic_checkpoint import AtomicLocalBackend
from .hooks import RNGStateHook, SparseTrainingHook, StaticSparsityHook
from .layer_decay import SLaKLearningRateDecayOptimizerConstructor
from .optim_wrapper import CPUAmpOptimWrapper
from .runner import StrictLoadingRunner
from .seg_label_check import SegLabelCheckHook, find_label_problems

__all__ = [
    'AtomicLocalBackend',
    'CPUAmpOptimWrapper',
    'RNGStateHook',
    'SLaKLearningRateDecayOptimizerConstructor',
    'SegLabelCheckHook',
    'SparseTrainingHook',
    'StaticSparsityHook',
    'find_label_problems',
    'StrictLoadingRunner',
]

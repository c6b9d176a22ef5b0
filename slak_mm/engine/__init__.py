from .atomic_checkpoint import AtomicLocalBackend
from .hooks import (
    FP32OutputsHook,
    RNGStateHook,
    SegLabelCheckHook,
    SparseTrainingHook,
    StaticSparsityHook,
)
from .hooks.seg_label_check_hook import find_label_problems
from .layer_decay import SLaKLearningRateDecayOptimizerConstructor
from .optim_wrapper import CPUAmpOptimWrapper
from .runner import StrictLoadingRunner

__all__ = [
    'AtomicLocalBackend',
    'CPUAmpOptimWrapper',
    'FP32OutputsHook',
    'RNGStateHook',
    'SLaKLearningRateDecayOptimizerConstructor',
    'SegLabelCheckHook',
    'SparseTrainingHook',
    'StaticSparsityHook',
    'find_label_problems',
    'StrictLoadingRunner',
]

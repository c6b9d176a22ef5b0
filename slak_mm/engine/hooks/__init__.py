"""mmengine hooks of slak_mm, registered in mmengine's root ``HOOKS``."""

from .fp32_outputs_hook import FP32OutputsHook
from .rng_state_hook import RNGStateHook
from .seg_label_check_hook import SegLabelCheckHook
from .sparse_training_hook import SparseTrainingHook
from .static_sparsity_hook import StaticSparsityHook

__all__ = [
    'FP32OutputsHook',
    'RNGStateHook',
    'SegLabelCheckHook',
    'SparseTrainingHook',
    'StaticSparsityHook',
]

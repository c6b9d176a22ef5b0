"""mmengine hooks of slak_mm, registered in mmengine's root ``HOOKS``."""

from .sparse_training_hook import SparseTrainingHook
from .static_sparsity_hook import StaticSparsityHook

__all__ = ['SparseTrainingHook', 'StaticSparsityHook']

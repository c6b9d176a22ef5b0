"""mmengine hooks of slak_mm, registered in mmengine's root ``HOOKS``."""

from .sparse_training_hook import SparseTrainingHook, StaticSparsityHook

__all__ = ['SparseTrainingHook', 'StaticSparsityHook']

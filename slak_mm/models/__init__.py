from .checkpoint import (
    RELEASE_KEY_RENAMES,
    load_slak_pretrained,
    release_to_slak_mm_key,
    slak_mm_to_release_key,
)
from .large_kernel import LargeKernelConv
from .layers import DropPath, LayerNorm2d
from .mlp import BlockMLP
from .slak import SLaK, SLaKBlock, SLaKStage

__all__ = [
    'SLaK',
    'SLaKBlock',
    'SLaKStage',
    'LargeKernelConv',
    'BlockMLP',
    'LayerNorm2d',
    'DropPath',
    'RELEASE_KEY_RENAMES',
    'load_slak_pretrained',
    'release_to_slak_mm_key',
    'slak_mm_to_release_key',
]

from .checkpoint import (
    CheckpointFileError,
    CheckpointMismatchError,
    checkpoint_safe_globals,
    load_checkpoint_strict,
    load_url_safely,
    make_mmengine_loading_strict,
    register_checkpoint_safe_globals,
    register_mmengine_checkpoint_loaders,
    safe_torch_load,
)
from .modules import SubmoduleNotFoundError, resolve_module

__all__ = [
    'CheckpointFileError',
    'CheckpointMismatchError',
    'SubmoduleNotFoundError',
    'checkpoint_safe_globals',
    'load_checkpoint_strict',
    'load_url_safely',
    'make_mmengine_loading_strict',
    'register_checkpoint_safe_globals',
    'register_mmengine_checkpoint_loaders',
    'resolve_module',
    'safe_torch_load',
]

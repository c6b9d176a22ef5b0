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

__all__ = [
    'CheckpointFileError',
    'CheckpointMismatchError',
    'checkpoint_safe_globals',
    'load_checkpoint_strict',
    'load_url_safely',
    'make_mmengine_loading_strict',
    'register_checkpoint_safe_globals',
    'register_mmengine_checkpoint_loaders',
    'safe_torch_load',
]

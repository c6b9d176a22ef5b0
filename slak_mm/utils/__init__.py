from .safe_load import (
    CheckpointFileError,
    checkpoint_safe_globals,
    load_url_safely,
    register_checkpoint_safe_globals,
    register_mmengine_checkpoint_loaders,
    safe_torch_load,
)

__all__ = [
    'CheckpointFileError',
    'checkpoint_safe_globals',
    'load_url_safely',
    'register_checkpoint_safe_globals',
    'register_mmengine_checkpoint_loaders',
    'safe_torch_load',
]

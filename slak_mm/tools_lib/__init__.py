"""Logic behind the command-line tools under ``tools/``.

The scripts only parse arguments and print; what they do lives here so that
it is importable and testable.
"""

from .deploy import deploy_checkpoint, relative_difference
from .model_builder import (
    build_model_from_config,
    compare_with_model,
    flatten_tensors,
    load_model_checkpoint,
    run_tensor_mode,
)

__all__ = [
    'build_model_from_config',
    'compare_with_model',
    'deploy_checkpoint',
    'flatten_tensors',
    'load_model_checkpoint',
    'relative_difference',
    'run_tensor_mode',
]

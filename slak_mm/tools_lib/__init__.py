"""Logic behind the command-line tools under ``tools/``.

The scripts only parse arguments and print; what they do lives here so that
it is importable and testable.
"""

from .deploy import check_finite, deploy_checkpoint, relative_difference
from .model_builder import (
    build_model_from_config,
    compare_with_model,
    flatten_tensors,
    is_mmdet_detector,
    load_model_checkpoint,
    network_output_kind,
    run_network,
    run_tensor_mode,
)

__all__ = [
    'build_model_from_config',
    'check_finite',
    'compare_with_model',
    'deploy_checkpoint',
    'flatten_tensors',
    'is_mmdet_detector',
    'load_model_checkpoint',
    'network_output_kind',
    'relative_difference',
    'run_network',
    'run_tensor_mode',
]

"""The library behind ``tools/``: inference, model building, train/test.

- :mod:`.inference`: strict-loading inference entry points
  (:func:`init_model`, :func:`load_checkpoint_strict`,
  :func:`check_checkpoint`);
- :mod:`.model_builder`: a model from a config for the analysis and
  conversion tools, its checkpoint loaded strictly, its network run;
- :mod:`.train_test`: what ``tools/train.py`` and ``tools/test.py`` do
  with the config, the runner and the process group.
"""

from ..models.builder import (
    build_model_from_config,
    compare_with_model,
    flatten_tensors,
    is_mmdet_detector,
    network_output_kind,
    run_network,
    run_tensor_mode,
)
from ..utils.checkpoint import load_checkpoint_strict
from .inference import check_checkpoint, init_model
from .train_test import (
    add_dump_metric,
    add_runner_arguments,
    build_runner,
    close_process_group,
    enable_amp,
    enable_auto_scale_lr,
    enable_test_amp,
    keep_detection_ops_fp32,
    keep_predictions_fp32,
    launcher_process_group,
    load_config,
    make_runner_parser,
    parse_runner_args,
    set_resume,
    set_test_output,
    trigger_visualization_hook,
    use_gloo_without_cuda,
)

__all__ = [
    'add_dump_metric',
    'add_runner_arguments',
    'build_model_from_config',
    'build_runner',
    'check_checkpoint',
    'close_process_group',
    'compare_with_model',
    'enable_amp',
    'enable_auto_scale_lr',
    'enable_test_amp',
    'flatten_tensors',
    'init_model',
    'is_mmdet_detector',
    'keep_detection_ops_fp32',
    'keep_predictions_fp32',
    'launcher_process_group',
    'load_checkpoint_strict',
    'load_config',
    'make_runner_parser',
    'network_output_kind',
    'parse_runner_args',
    'run_network',
    'run_tensor_mode',
    'set_resume',
    'set_test_output',
    'trigger_visualization_hook',
    'use_gloo_without_cuda',
]

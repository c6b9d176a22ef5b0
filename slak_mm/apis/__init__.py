"""The library behind ``tools/``: inference, model building, train/test.

- :mod:`.inference`: strict-loading inference entry points
  (:func:`init_model`, :func:`load_checkpoint_strict`,
  :func:`check_checkpoint`);
- :func:`build_model_from_config` and the helpers that run a model's
  network (from :mod:`slak_mm.models.builder`, re-exported here);
- what ``tools/train.py`` and ``tools/test.py`` do, in three parts:
  :mod:`.cli` parses their command lines, :mod:`.config` applies the
  options to the config, :mod:`.run` builds the runner and holds the
  process group;
- :mod:`.tool_runs`: the scripts run as subprocesses, as the demos do.
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
from .cli import add_runner_arguments, make_runner_parser, parse_runner_args
from .config import (
    add_fp32_outputs_hook,
    enable_amp,
    enable_auto_scale_lr,
    enable_test_amp,
    load_config,
    set_resume,
    set_test_output,
    trigger_visualization_hook,
    use_gloo_without_cuda,
)
from .inference import check_checkpoint, init_model
from .run import (
    add_dump_metric,
    build_runner,
    close_process_group,
    launcher_process_group,
)

__all__ = [
    'add_dump_metric',
    'add_fp32_outputs_hook',
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

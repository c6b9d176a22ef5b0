"""onnxruntime against our PyTorch path: eval latency of one exported model.

The model of a config (random weights unless a checkpoint is given, fused
to deploy form) is exported with :func:`slak_mm.converters.onnx.export_to_onnx`
and timed in one process, interleaved with the PyTorch forward
(``mode='tensor'`` under ``torch.no_grad``, the model's default backend),
both on the CPU with the same number of threads.
"""

import os
import statistics
import tempfile
from typing import Dict, Optional, Sequence

import torch

from ..converters.deploy import make_test_batch, relative_difference
from ..converters.onnx import (
    export_to_onnx,
    export_wrapper,
    torch_outputs,
)
from ..models.builder import build_model_from_config
from ..utils.checkpoint import load_checkpoint_strict
from .benchmark import time_interleaved


def onnxruntime_session(path: str, threads: int):
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle onnxruntime workers spin by default, which would steal the
    # cores from the interleaved PyTorch runs.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider']
    )


def run_onnx_speed(
    config: str,
    checkpoint: Optional[str] = None,
    shape: Sequence[int] = (224, 224),
    batch_size: int = 1,
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 20,
    cfg_options: Optional[dict] = None,
) -> Dict[str, object]:
    """Times onnxruntime and PyTorch on the deploy-form model of ``config``.

    Args:
        config (str): A classification, segmentation or detection config.
        checkpoint (str, optional): Weights; random (``init_weights``) when
            None, which does not change the timing.
        shape (Sequence[int]): Input ``(H, W)``.
        batch_size (int): Batch size N.
        threads (int): CPU threads of both runtimes.
        warmup (int): Untimed rounds before timing.
        repeats (int): Timed rounds (each runs both once, in turn).
        cfg_options (dict, optional): Overrides for the config.

    Returns:
        dict: ``ms`` (runtime -> median milliseconds per batch), ``spread``
        (runtime -> (min, max) ms), ``rel_diff`` (onnxruntime against
        PyTorch), ``shape``, ``threads``, ``repeats``, ``cpu``.
    """
    import numpy as np

    model, _ = build_model_from_config(config, cfg_options)
    if checkpoint:
        load_checkpoint_strict(model, checkpoint)
    else:
        model.init_weights()
    model.eval()
    model.backbone.switch_to_deploy()
    inputs = make_test_batch(shape, batch_size)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'model.onnx')
            export_to_onnx(model, inputs, path)
            session = onnxruntime_session(path, threads)
            feed = {session.get_inputs()[0].name: inputs.numpy()}
            wrapper = export_wrapper(model)

            def torch_step():
                with torch.no_grad():
                    return wrapper(inputs)

            steps = dict(
                pytorch=torch_step, onnxruntime=lambda: session.run(None, feed)
            )
            seconds = time_interleaved(
                steps, torch.device('cpu'), warmup, repeats
            )
            ort_outputs = [
                torch.from_numpy(np.asarray(a))
                for a in session.run(None, feed)
            ]
        _, rel = relative_difference(torch_outputs(model, inputs), ort_outputs)
    finally:
        torch.set_num_threads(previous_threads)
    return dict(
        ms={k: 1e3 * statistics.median(v) for k, v in seconds.items()},
        spread={k: (1e3 * min(v), 1e3 * max(v)) for k, v in seconds.items()},
        rel_diff=rel,
        shape=(batch_size, 3) + tuple(shape),
        threads=threads,
        repeats=repeats,
        cpu=cpu_name(),
    )


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``'unknown'`` elsewhere)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def format_onnx_speed(report: Dict[str, object]) -> str:
    """A markdown table of :func:`run_onnx_speed`'s report."""
    shape = 'x'.join(map(str, report['shape']))
    torch_ms = report['ms']['pytorch']
    lines = [
        f'{report["cpu"]}, {report["threads"]} threads, input {shape}, '
        f'median of {report["repeats"]} interleaved runs',
        '',
        '| runtime | ms / batch (median) | min - max | vs PyTorch |',
        '|---|---|---|---|',
    ]
    for name, ms in report['ms'].items():
        low, high = report['spread'][name]
        lines.append(
            f'| {name} | {ms:.1f} | {low:.1f} - {high:.1f} | '
            f'{torch_ms / ms:.2f}x |'
        )
    lines.append('')
    lines.append(
        f'onnxruntime vs PyTorch outputs: relative difference '
        f'{report["rel_diff"]:.1e}'
    )
    return '\n'.join(lines)

"""CUDA benchmark: SLaK-T's large kernels on each backend, and the backbone.

Two tables, both in bf16 (``torch.autocast``) and fp32, timed with CUDA
events after warm-up (which also compiles and autotunes the Triton
kernels), medians reported:

- components: the large-kernel module of each SLaK-T stage on that
  stage's map through each backend: ``'triton'`` (channels-last, the
  Triton kernels), ``'native'`` (channels-last, torch's conv: cuDNN's
  kernels) and ``'reference'`` (NCHW, one ``nn.Conv2d`` + BN per branch,
  as released); eval forward and train forward + backward, with each
  backend's peak memory and, for the Triton kernels, a
  lower bound on their time: per kernel launch, the longer of its
  multiply-adds at the rate its instruction mix can issue (the fp32 FMA
  peak over the instructions per FFMA of its compiled inner loop, see
  :data:`INSTRUCTIONS_PER_FFMA`) and the maps it moves at the memory
  bandwidth;
- backbones: SLaK-T through each of the three backends against timm's
  ConvNeXt-T (channels-last, same precision), eval forward and a full
  train step (forward, backward, AdamW), peak train memory from
  ``torch.cuda.max_memory_allocated``.

On CPU (a dry run of the code path, not a measurement) the timer is
``time.perf_counter`` and the Triton kernels need ``TRITON_INTERPRET=1``.
"""

import json
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..utils.cli import size_batch_pairs
from .timing import (
    PRECISIONS,
    SLAK_T_STAGES,
    backbone_steps,
    markdown_row,
    precision_context,
    stage_inputs,
)

#: The SLaK backends the component table compares, in its column order.
LARGE_KERNEL_BACKENDS = ('triton', 'native', 'reference')
#: SLaK-T through each backend (``slak_t_<backend>``) and timm's ConvNeXt-T.
BACKBONES = (
    *(f'slak_t_{backend}' for backend in LARGE_KERNEL_BACKENDS),
    'convnext_t',
)
SMALL_KERNEL = 5
# Nominal H200 rates (datasheet): fp32 on CUDA cores, HBM3e bandwidth.
DEFAULT_PEAK_TFLOPS = 67.0
DEFAULT_BANDWIDTH_TBS = 4.8
# Instructions the Triton kernels issue per FFMA in their inner loops,
# read from the compiled sm_90 code (Triton 3.8; tests/test_triton_dwconv.py
# recounts them): the tap-loop forward (8 x 8 x 32 tiles; short kernels and
# the eval pair of short ones), the sliding-window forward of long kernels
# (32 x 64 tiles, 4 warps, along H; its window adds (K + 7) / K
# multiply-adds, counted in triton_bound_ms), its variant adding a prior
# fp32 sum (the eval pair's second pass; same tile) and the line-walking
# weight gradient (16 x 64 tiles,
# 4 warps; its blocks of 8 taps add cdiv(K, 8) * 8 / K, counted too). Each SM
# sub-partition issues one warp instruction per clock and the fp32 peak
# is one FFMA per lane per clock, so a loop issuing k instructions per
# FFMA reaches at most 1/k of that peak: the rest of the mix (loads,
# bf16 conversions, address arithmetic) shares the issue slots.
INSTRUCTIONS_PER_FFMA = dict(
    bf16=dict(
        forward=63 / 16,
        strip_forward=194 / 128,
        strip_accumulate=193 / 128,
        weight_grad=857 / 512,
    ),
    fp32=dict(
        forward=49 / 16,
        strip_forward=173 / 128,
        strip_accumulate=172 / 128,
        weight_grad=756 / 512,
    ),
)

__all__ = [
    'BACKBONES',
    'LARGE_KERNEL_BACKENDS',
    'SLAK_T_STAGES',
    'backend_of',
    'build_backbone',
    'environment_report',
    'format_backbone_table',
    'format_component_table',
    'precision_context',
    'run_backbone_benchmark',
    'run_component_benchmark',
    'triton_bound_ms',
]


def time_ms(
    step: Callable, device: torch.device, warmup: int, repeats: int
) -> List[float]:
    """Milliseconds of each of ``repeats`` runs of ``step`` after
    ``warmup`` runs: CUDA events on CUDA, ``perf_counter`` on CPU."""
    for _ in range(warmup):
        step()
    times = []
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return times
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def peak_memory_mib(step: Callable, device: torch.device) -> Optional[float]:
    """Memory that one run of ``step`` allocates beyond what was allocated
    before it (MiB, ``max_memory_allocated``); None on CPU."""
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def backend_of(name: str) -> str:
    """The ``backend`` option that a component (a backend name itself) or
    a SLaK backbone (``slak_t_<backend>``) runs with.

    Raises:
        ValueError: For any other name.
    """
    backend = name[len('slak_t_') :] if name.startswith('slak_t_') else name
    if backend not in LARGE_KERNEL_BACKENDS:
        known = (*LARGE_KERNEL_BACKENDS, *BACKBONES[:-1])
        raise ValueError(f'unknown backend {name!r}; choose from {known}')
    return backend


def _layout(name: str) -> torch.memory_format:
    # The reference backend keeps NCHW maps, as released.
    if name in ('reference', 'slak_t_reference'):
        return torch.contiguous_format
    return torch.channels_last


def triton_bound_ms(
    batch: int,
    side: int,
    channels: int,
    kernel: int,
    mode: str,
    precision: str,
    peak_tflops: float,
    bandwidth_tbs: float,
    instructions_per_ffma: Optional[Dict[str, Dict[str, float]]] = None,
) -> float:
    """Lower bound on the Triton kernels' time for one module call.

    Each kernel launch takes at least the longer of its issue time (its
    multiply-adds at ``peak_tflops`` times the instructions it issues per
    FFMA: the attainable rate of its instruction mix) and its HBM time
    (the maps it must read and write at ``bandwidth_tbs``); the launches'
    bounds add up. Eval: the two folded strips, on two sliding windows
    when a strip is long (the first reads the map and writes an fp32 sum
    of the padded channels, the second reads the map and that sum and
    writes the output), else one tap-loop pass (reads the map, writes the
    output). Train: three branch convs, each a
    forward, an input-gradient (a forward with the flipped kernel) and a
    weight-gradient kernel, each moving two maps; long strips run the
    sliding-window forward, the small kernel the tap loop. Not counted:
    the padded copies the calls make, batch norms, elementwise work.

    Args:
        batch, side, channels, kernel (int): The module's input ``(batch,
            channels, side, side)`` and large kernel K (small kernel 5).
        mode (str): ``'eval'`` or ``'train'``.
        precision (str): ``'bf16'`` or ``'fp32'`` (maps' element size and
            instruction mix).
        peak_tflops (float): fp32 FMA peak of the CUDA cores.
        bandwidth_tbs (float): Memory bandwidth.
        instructions_per_ffma (dict, optional): Per precision, the
            instructions per FFMA of ``'forward'``, ``'strip_forward'``,
            ``'strip_accumulate'`` and ``'weight_grad'`` (default
            :data:`INSTRUCTIONS_PER_FFMA`).

    Returns:
        float: Milliseconds.
    """
    from ..ops.triton_dwconv import (
        padded_channels,
        uses_strip_kernel,
        weight_grad_tap_programs,
    )

    per_ffma = (instructions_per_ffma or INSTRUCTIONS_PER_FFMA)[precision]
    positions = batch * side * side * channels
    map_bytes = positions * (2 if precision == 'bf16' else 4)

    # The eval pair's fp32 sum of the first strip, channels padded.
    sum_bytes = 4 * batch * side * side * padded_channels(channels)

    def launch(taps, kernel_kind, moved_bytes=2 * map_bytes):
        issue = 2.0 * positions * taps * per_ffma[kernel_kind]
        return max(
            issue / (peak_tflops * 1e12),
            moved_bytes / (bandwidth_tbs * 1e12),
        )

    def window(shape):
        """Multiply-adds per output of a sliding window (its zero taps
        included)."""
        along = max(shape)
        return shape[0] * shape[1] * (along + 7) / along

    def forward(shape):
        """A single conv's forward: the sliding window for long kernels
        (its window's zero taps included), the tap loop otherwise."""
        taps = shape[0] * shape[1]
        if uses_strip_kernel([shape]):
            return launch(window(shape), 'strip_forward')
        return launch(taps, 'forward')

    def weight_grad(shape):
        """A weight gradient: blocks of 8 taps along its walk (the
        longer axis, H for square kernels)."""
        return launch(8 * weight_grad_tap_programs(*shape), 'weight_grad')

    reach = 2 * side - 1
    large, small = min(kernel, reach), min(SMALL_KERNEL, reach)
    shapes = ((large, small), (small, large), (small, small))
    if mode == 'eval' and uses_strip_kernel(shapes[:2]):
        seconds = launch(
            window(shapes[0]), 'strip_forward', map_bytes + sum_bytes
        ) + launch(
            window(shapes[1]),
            'strip_accumulate',
            2 * map_bytes + sum_bytes,
        )
    elif mode == 'eval':
        seconds = launch(2 * large * small, 'forward')
    else:
        seconds = sum(
            2 * forward(shape) + weight_grad(shape) for shape in shapes
        )
    return seconds * 1e3


def _large_kernel_steps(
    backend: str,
    kernel: int,
    channels: int,
    x: torch.Tensor,
    precision: str,
) -> Dict[str, Callable]:
    """Eval and train steps of one large-kernel module on one backend."""
    from slak_mm.models.large_kernel import LargeKernelConv

    module = LargeKernelConv(channels, kernel, SMALL_KERNEL).to(x.device)
    backend = backend_of(backend)
    inputs = x.contiguous(memory_format=_layout(backend))
    train_inputs = inputs.detach().clone().requires_grad_()
    grads = {}

    def eval_step():
        module.eval()
        with torch.no_grad(), precision_context(precision, x.device):
            module(inputs, backend)

    def train_step():
        module.train()
        with precision_context(precision, x.device):
            out = module(train_inputs, backend)
        if 'grad' not in grads:
            grads['grad'] = torch.randn_like(out)
        out.backward(grads['grad'])

    return dict(eval=eval_step, train=train_step)


def run_component_benchmark(
    sizes: Sequence[int] = (224, 512),
    batches: Sequence[int] = (64, 16),
    precisions: Sequence[str] = tuple(PRECISIONS),
    backends: Sequence[str] = LARGE_KERNEL_BACKENDS,
    stages: Sequence[Tuple[int, int]] = SLAK_T_STAGES,
    device: str = 'cuda',
    warmup: int = 3,
    repeats: int = 10,
    peak_tflops: float = DEFAULT_PEAK_TFLOPS,
    bandwidth_tbs: float = DEFAULT_BANDWIDTH_TBS,
    log: Callable[[str], None] = print,
) -> List[dict]:
    """Times the large-kernel module of every stage on every backend.

    Returns:
        list[dict]: One entry per (size, stage, precision, backend) with
        ``eval_ms``, ``train_ms`` (medians), ``train_peak_mib`` and the
        Triton bound ``bound_eval_ms`` / ``bound_train_ms``.
    """
    dev = torch.device(device)
    results = []
    for where, x in stage_inputs(sizes, batches, dev, stages):
        kernel, channels = where['kernel'], where['channels']
        for precision in precisions:
            bounds = {
                f'bound_{mode}_ms': triton_bound_ms(
                    where['batch'],
                    where['map'],
                    channels,
                    kernel,
                    mode,
                    precision,
                    peak_tflops,
                    bandwidth_tbs,
                )
                for mode in ('eval', 'train')
            }
            for backend in backends:
                log(
                    f'large kernel: {where["size"]}² x{where["batch"]}, '
                    f'stage {where["stage"]}, {precision}, {backend}'
                )
                steps = _large_kernel_steps(
                    backend, kernel, channels, x, precision
                )
                entry = dict(
                    where, precision=precision, backend=backend, **bounds
                )
                for mode, step in steps.items():
                    times = time_ms(step, dev, warmup, repeats)
                    entry[f'{mode}_ms'] = statistics.median(times)
                entry['train_peak_mib'] = peak_memory_mib(steps['train'], dev)
                results.append(entry)
                del steps
                _release_memory(dev)
    return results


def build_backbone(name: str, slak_kwargs: Optional[dict] = None) -> nn.Module:
    """One benchmarked backbone (pooled features), on CPU.

    Args:
        name (str): One of :data:`BACKBONES`.
        slak_kwargs (dict, optional): Overrides of the SLaK arguments
            (default SLaK-T: ``arch='tiny'``).
    """
    if name == 'convnext_t':
        import timm

        return timm.create_model(
            'convnext_tiny', pretrained=False, num_classes=0
        )
    if name not in BACKBONES:
        raise ValueError(f'unknown backbone {name!r}; choose from {BACKBONES}')
    from slak_mm.models import SLaK

    kwargs = dict(arch='tiny', out_indices=-1, gap_before_final_norm=True)
    kwargs.update(slak_kwargs or {})
    return SLaK(backend=backend_of(name), **kwargs)


def _release_memory(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_backbone_benchmark(
    sizes: Sequence[int] = (224, 512),
    batches: Sequence[int] = (64, 16),
    precisions: Sequence[str] = tuple(PRECISIONS),
    models: Sequence[str] = BACKBONES,
    slak_kwargs: Optional[dict] = None,
    device: str = 'cuda',
    warmup: int = 2,
    repeats: int = 5,
    log: Callable[[str], None] = print,
) -> List[dict]:
    """Times eval and train steps of every backbone, one model at a time.

    Returns:
        list[dict]: One entry per (size, precision, model) with
        ``eval_images_per_s``, ``train_images_per_s`` and
        ``train_peak_mib`` (what one train step allocates beyond the model
        and AdamW's state: gradients, activations, workspace).
    """
    dev = torch.device(device)
    results = []
    for size, batch in size_batch_pairs(sizes, batches):
        for precision in precisions:
            for name in models:
                log(f'backbone: {name}, {size}² x{batch}, {precision}')
                torch.manual_seed(0)
                layout = _layout(name)
                model = build_backbone(name, slak_kwargs).to(dev)
                model = model.to(memory_format=layout)
                images = torch.randn(batch, 3, size, size, device=dev)
                images = images.contiguous(memory_format=layout)
                steps = backbone_steps(model, images, precision)
                entry = dict(
                    model=name, size=size, batch=batch, precision=precision
                )
                eval_ms = statistics.median(
                    time_ms(steps['eval'], dev, warmup, repeats)
                )
                entry['eval_images_per_s'] = batch / eval_ms * 1e3
                train_ms = statistics.median(
                    time_ms(steps['train'], dev, warmup, repeats)
                )
                entry['train_images_per_s'] = batch / train_ms * 1e3
                # After warm-up: compiling, autotuning (which allocates
                # scratch) and AdamW's state are not counted.
                entry['train_peak_mib'] = peak_memory_mib(steps['train'], dev)
                results.append(entry)
                del model, steps, images
                _release_memory(dev)
    return results


def _mib(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.0f}'


def format_component_table(results: List[dict]) -> str:
    """Markdown: one row per (input, stage, precision, mode), the three
    backends' milliseconds side by side, the Triton kernels' bound, the
    native backend's (cuDNN's) time over that bound (below 3: Triton
    cannot be 3x faster than cuDNN on that shape even at its bound; below
    1.5: cuDNN is already near what the Triton kernels could reach),
    Triton's speed-up over the native and the reference backends, and
    each backend's peak train memory."""
    rows = {}
    for r in results:
        key = (r['size'], r['batch'], r['stage'], r['precision'])
        rows.setdefault(key, {})[r['backend']] = r
    lines = [
        '| input | stage | map | C | K | prec. | mode | triton ms '
        '| native (cuDNN) ms | reference ms | triton bound ms '
        '| native / bound | x native | x reference |',
        '|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|',
    ]
    memory_lines = [
        '| input | stage | prec. | triton MiB | native (cuDNN) MiB '
        '| reference MiB |',
        '|---|---:|---|---:|---:|---:|',
    ]
    for (size, batch, stage, precision), by_backend in rows.items():
        head = [f'{size}² x{batch}', str(stage)]
        for mode in ('eval', 'train'):
            lines.append(_time_row(head, precision, mode, by_backend))
        memory = [
            _mib(by_backend[b]['train_peak_mib']) if b in by_backend else '-'
            for b in LARGE_KERNEL_BACKENDS
        ]
        memory_lines.append(markdown_row([*head, precision, *memory]))
    return (
        '\n'.join(lines)
        + '\n\nPeak train memory:\n\n'
        + '\n'.join(memory_lines)
    )


def _time_row(
    head: List[str],
    precision: str,
    mode: str,
    by_backend: Dict[str, dict],
) -> str:
    """One (input, stage, precision, mode) row of the component table."""
    key = f'{mode}_ms'
    first = next(iter(by_backend.values()))
    bound = first[f'bound_{mode}_ms']

    def cell(backend):
        if backend not in by_backend:
            return '-'
        return f'{by_backend[backend][key]:.2f}'

    def over_triton(other):
        if 'triton' not in by_backend or other not in by_backend:
            return '-'
        return f'{by_backend[other][key] / by_backend["triton"][key]:.2f}'

    native_over_bound = (
        f'{by_backend["native"][key] / bound:.1f}'
        if 'native' in by_backend
        else '-'
    )
    cells = [
        *head,
        str(first['map']),
        str(first['channels']),
        str(first['kernel']),
        precision,
        mode,
        cell('triton'),
        cell('native'),
        cell('reference'),
        f'{bound:.3f}',
        native_over_bound,
        over_triton('native'),
        over_triton('reference'),
    ]
    return markdown_row(cells)


def format_backbone_table(results: List[dict]) -> str:
    """Markdown: images/s and peak train memory of every backbone, with
    ratios to ConvNeXt-T at the same input and precision."""
    by_key = {(r['model'], r['size'], r['precision']): r for r in results}
    lines = [
        '| model | input | prec. | eval img/s | x CNX | train img/s '
        '| x CNX | train peak MiB |',
        '|---|---|---|---:|---:|---:|---:|---:|',
    ]
    for r in results:
        cnx = by_key.get(('convnext_t', r['size'], r['precision']))
        cells = [r['model'], f'{r["size"]}² x{r["batch"]}', r['precision']]
        for mode in ('eval', 'train'):
            key = f'{mode}_images_per_s'
            cells.append(f'{r[key]:.1f}')
            cells.append(f'{r[key] / cnx[key]:.2f}' if cnx else '-')
        cells.append(_mib(r['train_peak_mib']))
        lines.append(markdown_row(cells))
    return '\n'.join(lines)


def environment_report(device: torch.device) -> dict:
    """Versions and settings that the numbers depend on."""
    report = dict(
        torch=torch.__version__,
        device=str(device),
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
    )
    try:
        import triton

        report['triton'] = triton.__version__
    except ImportError:
        report['triton'] = None
    if device.type == 'cuda':
        report['gpu'] = torch.cuda.get_device_name(device)
        report['cudnn'] = torch.backends.cudnn.version()
    return report


def cuda_benchmark_report(
    device: str = 'cuda',
    components: bool = True,
    backbones: bool = True,
    backends: Sequence[str] = LARGE_KERNEL_BACKENDS,
    models: Sequence[str] = BACKBONES,
    peak_tflops: float = DEFAULT_PEAK_TFLOPS,
    bandwidth_tbs: float = DEFAULT_BANDWIDTH_TBS,
    log: Callable[[str], None] = print,
    **timing,
) -> dict:
    """Runs the component and/or backbone benchmark and adds their
    markdown tables to the report.

    Args:
        device (str): ``'cuda'``, or ``'cpu'`` for a dry run.
        components, backbones (bool): Which tables to measure.
        backends, peak_tflops, bandwidth_tbs: See
            :func:`run_component_benchmark`.
        models: See :func:`run_backbone_benchmark`.
        timing: ``sizes``, ``batches``, ``precisions``, ``warmup`` and
            ``repeats``, passed to both.

    Returns:
        dict: ``environment`` (:func:`environment_report`), and per table
        the raw results (``components``, ``backbones``) and the markdown
        (``component_table``, ``backbone_table``).

    Raises:
        RuntimeError: For ``device='cuda'`` when torch sees no CUDA device.
    """
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError('--device cuda, but torch sees no CUDA device')
    report = dict(environment=environment_report(dev))
    log(json.dumps(report['environment']))
    if components:
        report['components'] = run_component_benchmark(
            backends=backends,
            peak_tflops=peak_tflops,
            bandwidth_tbs=bandwidth_tbs,
            device=device,
            log=log,
            **timing,
        )
        report['component_table'] = format_component_table(
            report['components']
        )
    if backbones:
        report['backbones'] = run_backbone_benchmark(
            models=models, device=device, log=log, **timing
        )
        report['backbone_table'] = format_backbone_table(report['backbones'])
    return report

"""Speed and memory benchmark of SLaK-T against its reference and ConvNeXt-T.

Measured in one process, interleaved (every repeat runs every model once in
turn) so that drift of a shared machine hits all models alike:

- eval: images/s of a forward pass under ``torch.no_grad`` in eval mode;
- train: images/s of a full train step (zero grads, forward, backward of
  the mean of the pooled features, AdamW step) in train mode;
- peak train memory: on CPU, the peak resident set size (``VmHWM``) of a
  fresh subprocess during three train steps, minus its resident size just
  before the first step (model, optimizer and input already built), i.e.
  what a step adds: gradients, AdamW state, activations and workspace.
  The fresh process (``python -m slak_mm.analysis.train_memory``, one per
  model, size and dtype) is what makes this a measurement: in one process
  the high-water mark is shared by every model measured, and memory freed
  by an earlier model stays with the allocator, so a later model's steps
  can reuse it without raising the resident size. On CUDA,
  ``torch.cuda.max_memory_allocated`` over the same steps (also in the
  worker, for one code path).

With ``dtypes`` holding ``'bf16'`` the same steps also run under
``torch.autocast(device, dtype=torch.bfloat16)`` (interleaved with the fp32
ones), and the bf16 eval outputs are compared with the fp32 ones of the
same model on the same images (max abs difference over max abs).

On CPU a square oneDNN product (``gemm_side``³, in every timed
dtype that oneDNN runs natively on the CPU, through the inner product the
block MLPs use) is timed in the same
interleaved rounds as the models, as the machine's reference compute rate:
each model's eval rate in GFLOP/s (its dense multiply-accumulates counted
by :func:`~.complexity.count_complexity`, two FLOPs each) is reported as
a fraction of it (:func:`format_rate_table`).

Models: ``slak_t`` (SLaK-T as users build it, default ``backend``),
``slak_t_deploy`` (the same after ``switch_to_deploy``, eval only),
``slak_t_reference`` (``backend='reference'``: NCHW, one ``nn.Conv2d`` +
BN per branch, as released) and ``convnext_t`` (mmpretrain's ConvNeXt-T).
All are backbones in classification mode (global pooling, final norm).
"""

import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..utils.cli import size_batch_pairs
from .timing import (
    PRECISIONS,
    SLAK_T_STAGES,
    backbone_steps,
    check_precision,
    markdown_row,
    precision_context,
    save_report,
    stage_inputs,
    synchronize,
)

MODEL_NAMES = ('slak_t', 'slak_t_deploy', 'slak_t_reference', 'convnext_t')
EVAL_ONLY = ('slak_t_deploy',)
#: Side of the square oneDNN product timed as the reference compute rate.
GEMM_SIDE = 2048

__all__ = [
    'GEMM_SIDE',
    'MODEL_NAMES',
    'SLAK_T_STAGES',
    'build_model',
    'format_component_table',
    'format_dtype_table',
    'format_rate_table',
    'format_table',
    'gemm_step',
    'measure_train_memory',
    'output_error',
    'run_benchmark',
    'run_component_benchmark',
    'save_report',
    'time_interleaved',
]


def build_model(name: str) -> nn.Module:
    """Builds one benchmarked backbone, in classification mode.

    Args:
        name (str): One of :data:`MODEL_NAMES`.
    """
    from slak_mm.models import SLaK

    if name in ('slak_t', 'slak_t_deploy'):
        model = SLaK(arch='tiny', out_indices=3, gap_before_final_norm=True)
        if name == 'slak_t_deploy':
            model.eval()
            model.switch_to_deploy()
        return model
    if name == 'slak_t_reference':
        return SLaK(
            arch='tiny',
            out_indices=3,
            gap_before_final_norm=True,
            backend='reference',
        )
    if name == 'convnext_t':
        # Imported here only: slak_mm itself never depends on mmpretrain.
        from mmpretrain.models import ConvNeXt

        return ConvNeXt(
            arch='tiny', out_indices=-1, gap_before_final_norm=True
        )
    raise ValueError(f'unknown model {name!r}; choose from {MODEL_NAMES}')


def output_error(model: nn.Module, images: torch.Tensor, dtype: str) -> float:
    """Max abs difference of the eval outputs under ``dtype`` from the
    fp32 ones, over the max abs of the fp32 outputs."""
    model.eval()
    with torch.no_grad():
        expected = model(images)
        with precision_context(dtype, images.device):
            actual = model(images)
    scale = max(e.abs().max().item() for e in expected)
    diff = max(
        (a.float() - e).abs().max().item() for a, e in zip(actual, expected)
    )
    return diff / max(scale, 1e-12)


def gemm_supported(dtype: str) -> bool:
    """Whether oneDNN runs a native ``dtype`` product on this CPU (bf16
    needs AVX512-BF16 or AMX: not on an AVX2-only CPU), i.e. whether
    :func:`gemm_step` can time one."""
    from slak_mm.models.backends import torch_private

    cast = PRECISIONS[dtype] or torch.float32
    return torch_private.available('linear') and torch_private.onednn_supports(
        cast
    )


def gemm_step(side: int, dtype: str) -> Callable[[], torch.Tensor]:
    """One ``(side, side) @ (side, side)`` product on oneDNN's inner
    product (:func:`~slak_mm.models.backends.torch_private.linear`, the op the
    block MLPs run on) in ``dtype``, bf16 with fp32 accumulation.

    Raises:
        RuntimeError: If oneDNN cannot run ``dtype`` natively on this CPU.
    """
    from slak_mm.models.backends import torch_private

    cast = PRECISIONS[dtype] or torch.float32
    if not gemm_supported(dtype):
        raise RuntimeError(
            f'oneDNN runs no native {dtype} product on this CPU; '
            'run the benchmark without the GEMM reference (--no-gemm)'
        )
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(side, side, generator=generator).to(cast)
    right = torch.randn(side, side, generator=generator).to(cast)
    return lambda: torch_private.linear(left, right)


def model_gflop(model: nn.Module, size: int) -> float:
    """Dense GFLOP of one forward of one ``size``² image: two
    per multiply-accumulate counted by :func:`~.complexity.count_complexity`
    (convolutions and matrix products; SLaK-T at 224²: 17.4)."""
    from .complexity import count_complexity

    report = count_complexity(model, (3, size, size))
    return 2 * report.total('macs') / 1e9


def time_interleaved(
    steps: Dict[str, Callable],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> Dict[str, List[float]]:
    """Times each step ``repeats`` times, round-robin, after warm-up.

    Returns:
        dict[str, list[float]]: Seconds of every repeat of every step.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize(device)
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def measure_train_memory(
    name: str,
    size: int,
    batch: int,
    device: str,
    threads: int,
    dtype: str = 'fp32',
) -> float:
    """Peak memory (MiB) that three train steps add, measured in a fresh
    process (see the module docstring and :mod:`.train_memory`)."""
    import slak_mm

    # The worker must import this same slak_mm, wherever it was found.
    source_root = os.path.dirname(os.path.dirname(slak_mm.__file__))
    path = os.environ.get('PYTHONPATH')
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=source_root + (os.pathsep + path if path else ''),
    )
    command = [sys.executable, '-m', 'slak_mm.analysis.train_memory']
    command += [name, str(size), str(batch), '--device', device]
    command += ['--threads', str(threads), '--dtype', dtype]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(
            f'train memory of {name} at {size} ({dtype}) failed:\n'
            + result.stderr[-3000:]
        )
    return float(result.stdout.strip().splitlines()[-1])


def _prepare_run(
    sizes: Sequence[int], batches: Sequence[int], threads: int, device: str
) -> torch.device:
    """Checks that sizes and batches pair up, sets the thread count and
    returns the device."""
    size_batch_pairs(sizes, batches)
    torch.set_num_threads(threads)
    return torch.device(device)


def run_benchmark(
    sizes: Sequence[int] = (224, 512),
    batches: Sequence[int] = (4, 1),
    models: Sequence[str] = MODEL_NAMES,
    threads: int = 2,
    warmup: int = 2,
    repeats: int = 5,
    device: str = 'cpu',
    memory: bool = True,
    dtypes: Sequence[str] = ('fp32',),
    gemm_side: Optional[int] = GEMM_SIDE,
    compile: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Measures every model at every size; returns a JSON-able dict.

    Args:
        sizes (Sequence[int]): Square input sizes.
        batches (Sequence[int]): Batch size per entry of ``sizes``.
        models (Sequence[str]): Names from :data:`MODEL_NAMES`.
        threads (int): ``torch.set_num_threads`` (CPU).
        warmup (int): Untimed rounds before timing.
        repeats (int): Timed rounds; medians are reported.
        device (str): ``'cpu'`` or ``'cuda'``.
        memory (bool): Also measure peak train memory.
        dtypes (Sequence[str]): Keys of :data:`~.timing.PRECISIONS`;
            every model runs in each (``'bf16'``: under autocast),
            interleaved.
        gemm_side (int, optional): Side of the square oneDNN product timed
            in each dtype in the same rounds (:func:`gemm_step`), the
            reference for the models' GFLOP/s; None to skip it. CPU only.
            A dtype oneDNN has no native product for on this CPU gets no
            reference (listed in the report's
            ``gemm_unsupported_dtypes``); its models are still timed.
        compile (bool): Also time every model under ``torch.compile``
            (default inductor, sharing the eager model's parameters) as
            ``<name>+compile``, in the same rounds; the first call of each
            compiled step (the compile time) is timed before the warm-up
            and reported as ``<mode>_first_call_s``.
        log (callable): Progress output.
    """
    for dtype in dtypes:
        check_precision(dtype)
    dev = _prepare_run(sizes, batches, threads, device)
    if gemm_side is not None and dev.type != 'cpu':
        raise ValueError(
            'the oneDNN GEMM reference runs on CPU only, '
            f'got device {device!r}'
        )
    # A dtype oneDNN has no native product for (bf16 on an AVX2-only CPU)
    # still times its models (autocast runs standard ops there); only its
    # GEMM reference, and so its rows of the rate table, are left out.
    referenced_dtypes = dtypes if gemm_side is not None else ()
    gemm_dtypes = [d for d in referenced_dtypes if gemm_supported(d)]
    gemm_unsupported = [d for d in referenced_dtypes if d not in gemm_dtypes]
    for dtype in gemm_unsupported:
        log(
            f'no {dtype} GEMM reference: oneDNN runs no native {dtype} '
            'product on this CPU'
        )
    gemm_steps = {
        f'gemm/{dtype}': gemm_step(gemm_side, dtype) for dtype in gemm_dtypes
    }
    report = dict(
        torch=torch.__version__,
        device=device,
        threads=threads,
        warmup=warmup,
        repeats=repeats,
        dtypes=list(dtypes),
        memory_method=(
            'CUDA max_memory_allocated'
            if dev.type == 'cuda'
            else 'subprocess VmHWM minus VmRSS before the first train step'
        ),
        results=[],
        gemm=[],
        gemm_unsupported_dtypes=gemm_unsupported,
    )
    for size, batch in zip(sizes, batches):
        torch.manual_seed(0)
        images = torch.randn(batch, 3, size, size, device=dev)
        built = {name: build_model(name).to(dev) for name in models}
        runs = dict(built)
        if compile:
            torch._dynamo.reset()
            for name in models:
                runs[f'{name}+compile'] = torch.compile(built[name])
        steps = dict(gemm_steps)
        for dtype in dtypes:
            for name, model in runs.items():
                base = name.split('+')[0]
                for mode, step in backbone_steps(model, images, dtype).items():
                    if mode == 'eval' or base not in EVAL_ONLY:
                        steps[f'{name}/{dtype}/{mode}'] = step
        first_call = {}
        for key, step in steps.items():
            if '+compile/' in key:
                log(f'compiling {key}')
                synchronize(dev)
                start = time.perf_counter()
                step()
                synchronize(dev)
                first_call[key] = time.perf_counter() - start
        log(f'timing {size}x{size}, batch {batch}: {len(steps)} steps')
        seconds = time_interleaved(steps, dev, warmup, repeats)
        gflop = {}
        if gemm_side is not None:
            gflop = {name: model_gflop(built[name], size) for name in models}
        for dtype in dtypes:
            if dtype in gemm_dtypes:
                median = statistics.median(seconds[f'gemm/{dtype}'])
                report['gemm'].append(
                    dict(
                        size=size,
                        dtype=dtype,
                        side=gemm_side,
                        seconds=seconds[f'gemm/{dtype}'],
                        gflops=2 * gemm_side**3 / median / 1e9,
                    )
                )
            for name in runs:
                entry = dict(model=name, size=size, batch=batch, dtype=dtype)
                if name in gflop:
                    entry['gflop_per_image'] = gflop[name]
                for mode in ('eval', 'train'):
                    key = f'{name}/{dtype}/{mode}'
                    if key in seconds:
                        median = statistics.median(seconds[key])
                        entry[f'{mode}_seconds'] = seconds[key]
                        entry[f'{mode}_images_per_s'] = batch / median
                    if key in first_call:
                        entry[f'{mode}_first_call_s'] = first_call[key]
                if name not in built:  # compiled: timing rows only
                    report['results'].append(entry)
                    continue
                if PRECISIONS[dtype] is not None:
                    entry['output_rel_error'] = output_error(
                        built[name], images, dtype
                    )
                if memory and name not in EVAL_ONLY:
                    log(f'train memory of {name} at {size} in {dtype}')
                    entry['train_peak_mib'] = measure_train_memory(
                        name, size, batch, device, threads, dtype
                    )
                report['results'].append(entry)
        del built, runs, steps
    return report


def format_compile_table(report: dict) -> str:
    """Renders compiled against eager: images/s of ``<name>+compile`` over
    those of ``<name>`` (same dtype and size, measured in the same rounds)
    and the first call of each compiled step (compile time included)."""
    header = (
        '| model | dtype | input | eval x eager | eval first call s '
        '| train x eager | train first call s |\n'
        '|---|---|---|---:|---:|---:|---:|'
    )
    lines = [header]
    by_key = {
        (r['model'], r.get('dtype', 'fp32'), r['size']): r
        for r in report['results']
    }
    for (name, dtype, size), entry in by_key.items():
        if not name.endswith('+compile'):
            continue
        eager = by_key[(name[: -len('+compile')], dtype, size)]
        cells = [name, dtype, f'{size}² x{entry["batch"]}']
        for mode in ('eval', 'train'):
            key = f'{mode}_images_per_s'
            if key in entry and key in eager:
                cells.append(f'{entry[key] / eager[key]:.2f}')
                cells.append(f'{entry[f"{mode}_first_call_s"]:.1f}')
            else:
                cells += ['-', '-']
        lines.append(markdown_row(cells))
    return '\n'.join(lines)


def format_table(report: dict) -> str:
    """Renders absolute numbers and ratios as a markdown table.

    Ratios are images/s over those of ``slak_t_reference`` (``x ref``)
    and ``convnext_t`` (``x CNX``) at the same size. fp32 results only
    (entries without a ``dtype`` are fp32); see :func:`format_dtype_table`.
    """
    header = (
        '| model | input | eval img/s | x ref | x CNX '
        '| train img/s | x ref | x CNX | train peak MiB |\n'
        '|---|---|---:|---:|---:|---:|---:|---:|---:|'
    )
    lines = [header]
    results = [
        r for r in report['results'] if r.get('dtype', 'fp32') == 'fp32'
    ]
    by_key = {(r['model'], r['size']): r for r in results}

    def ratio(entry, other, key):
        if other is None or key not in entry or key not in other:
            return '-'
        return f'{entry[key] / other[key]:.2f}'

    for entry in results:
        ref = by_key.get(('slak_t_reference', entry['size']))
        cnx = by_key.get(('convnext_t', entry['size']))
        cells = [entry['model'], f'{entry["size"]}² x{entry["batch"]}']
        for key in ('eval_images_per_s', 'train_images_per_s'):
            cells.append(f'{entry[key]:.2f}' if key in entry else '-')
            cells.append(ratio(entry, ref, key))
            cells.append(ratio(entry, cnx, key))
        mem = entry.get('train_peak_mib')
        cells.append(f'{mem:.0f}' if mem is not None else '-')
        lines.append(markdown_row(cells))
    return '\n'.join(lines)


def format_dtype_table(report: dict) -> str:
    """Renders the non-fp32 results: images/s, their ratio to the same
    model's fp32 images/s in the same run (``x fp32``), and the output
    error against fp32 (max abs difference over max abs)."""
    header = (
        '| model | input | dtype | eval img/s | x fp32 | train img/s '
        '| x fp32 | rel. error vs fp32 | train peak MiB |\n'
        '|---|---|---|---:|---:|---:|---:|---:|---:|'
    )
    lines = [header]
    fp32 = {
        (r['model'], r['size']): r
        for r in report['results']
        if r.get('dtype', 'fp32') == 'fp32'
    }
    for entry in report['results']:
        if entry.get('dtype', 'fp32') == 'fp32':
            continue
        base = fp32.get((entry['model'], entry['size']))
        cells = [
            entry['model'],
            f'{entry["size"]}² x{entry["batch"]}',
            entry['dtype'],
        ]
        for key in ('eval_images_per_s', 'train_images_per_s'):
            cells.append(f'{entry[key]:.2f}' if key in entry else '-')
            if base is None or key not in entry or key not in base:
                cells.append('-')
            else:
                cells.append(f'{entry[key] / base[key]:.2f}')
        error = entry.get('output_rel_error')
        cells.append(f'{error:.1e}' if error is not None else '-')
        mem = entry.get('train_peak_mib')
        cells.append(f'{mem:.0f}' if mem is not None else '-')
        lines.append(markdown_row(cells))
    return '\n'.join(lines)


def format_rate_table(report: dict) -> str:
    """Renders each model's eval compute rate against the oneDNN GEMM
    rate of the same dtype, timed in the same rounds at the same input
    size: GFLOP per image (dense), eval GFLOP/s (that times images/s) and
    their fraction of the GEMM's GFLOP/s. Dtypes without a reference
    (no native oneDNN product on the CPU) are named below the table."""
    header = (
        '| model | input | dtype | GFLOP/img | eval GFLOP/s '
        '| oneDNN GEMM GFLOP/s | of GEMM |\n'
        '|---|---|---|---:|---:|---:|---:|'
    )
    gemm = {(g['size'], g['dtype']): g['gflops'] for g in report['gemm']}
    lines = [header]
    for entry in report['results']:
        dtype = entry.get('dtype', 'fp32')
        reference = gemm.get((entry['size'], dtype))
        if reference is None or 'gflop_per_image' not in entry:
            continue
        rate = entry['gflop_per_image'] * entry['eval_images_per_s']
        cells = [
            entry['model'],
            f'{entry["size"]}² x{entry["batch"]}',
            dtype,
            f'{entry["gflop_per_image"]:.2f}',
            f'{rate:.1f}',
            f'{reference:.1f}',
            f'{rate / reference:.0%}',
        ]
        lines.append(markdown_row(cells))
    unsupported = report.get('gemm_unsupported_dtypes', [])
    if unsupported:
        names = ', '.join(unsupported)
        lines += [
            '',
            f'No {names} rows: oneDNN runs no native {names} product on '
            'this CPU, so there is no GEMM reference to compare with.',
        ]
    return '\n'.join(lines)


def _component_steps(
    component: str, channels: int, kernel: int, x: torch.Tensor
) -> Dict[str, Callable]:
    """Eval and train steps of one SLaK-T component, reference and default.

    The reference runs as in the released model (NCHW maps, ``nn.Linear``),
    the default as the backbone runs it by default (channels-last maps,
    ``backend='auto'``). ``x`` is ``(N, C, H, W)``, NCHW.
    """
    from slak_mm.models.backends import get_backend
    from slak_mm.models.large_kernel import LargeKernelConv
    from slak_mm.models.mlp import BlockMLP

    steps = {}
    for variant, name in (('ref', 'reference'), ('default', 'auto')):
        backend = get_backend(name, x.device)
        if component == 'large_kernel':
            module = LargeKernelConv(channels, kernel, 5).to(x.device)
            if variant == 'ref':
                inputs = x
            else:
                inputs = x.contiguous(memory_format=torch.channels_last)

            def forward(module=module, inputs=inputs, backend=backend):
                return module(inputs, backend)

        else:
            module = nn.ModuleList(
                [
                    nn.Linear(channels, 4 * channels),
                    nn.GELU(),
                    nn.Linear(4 * channels, channels),
                ]
            ).to(x.device)
            # The MLP sees (N, H, W, C) maps in both paths.
            inputs = x.permute(0, 2, 3, 1).contiguous()
            mlp = BlockMLP()

            def forward(
                mlp=mlp, inputs=inputs, layers=module, backend=backend
            ):
                return mlp(inputs, *layers, backend)

        def eval_step(module=module, forward=forward):
            module.eval()
            with torch.no_grad():
                forward()

        def train_step(module=module, forward=forward):
            module.train()
            module.zero_grad(set_to_none=True)
            forward().sum().backward()

        steps[f'{variant}/eval'] = eval_step
        steps[f'{variant}/train'] = train_step
    return steps


def run_component_benchmark(
    sizes: Sequence[int] = (224, 512),
    batches: Sequence[int] = (4, 1),
    threads: int = 2,
    warmup: int = 2,
    repeats: int = 5,
    device: str = 'cpu',
    log: Callable[[str], None] = print,
) -> List[dict]:
    """Times the large-kernel module and the MLP of every SLaK-T stage.

    For each stage's feature map, interleaved in one process: the eval
    forward and the train forward + backward of :class:`LargeKernelConv`
    (three conv + BN branches) and of the block MLP, release-style
    reference against the default path.

    Returns:
        list[dict]: One entry per (size, stage, component) with median
        milliseconds ``ref_eval_ms``, ``default_eval_ms``,
        ``ref_train_ms`` and ``default_train_ms``.
    """
    dev = _prepare_run(sizes, batches, threads, device)
    results = []
    for where, x in stage_inputs(sizes, batches, dev):
        for component in ('large_kernel', 'mlp'):
            log(
                f'timing {component} of stage {where["stage"]} at '
                f'{where["size"]}'
            )
            steps = _component_steps(
                component, where['channels'], where['kernel'], x
            )
            seconds = time_interleaved(steps, dev, warmup, repeats)
            entry = dict(where, component=component)
            for key, values in seconds.items():
                variant, mode = key.split('/')
                entry[f'{variant}_{mode}_ms'] = statistics.median(values) * 1e3
            results.append(entry)
    return results


def format_component_table(results: List[dict]) -> str:
    """Renders :func:`run_component_benchmark` results as markdown."""
    lines = [
        '| input | stage | map | C | K | component | eval ref ms '
        '| eval default ms | x | train ref ms | train default ms | x |',
        '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|',
    ]
    for r in results:
        cells = [
            f'{r["size"]}² x{r["batch"]}',
            str(r['stage']),
            str(r['map']),
            str(r['channels']),
            str(r['kernel']),
            r['component'],
        ]
        for mode in ('eval', 'train'):
            ref, default = r[f'ref_{mode}_ms'], r[f'default_{mode}_ms']
            cells += [f'{ref:.1f}', f'{default:.1f}', f'{ref / default:.2f}']
        lines.append(markdown_row(cells))
    return '\n'.join(lines)


def benchmark_report(
    models: Sequence[str] = MODEL_NAMES,
    dtypes: Sequence[str] = ('fp32',),
    memory: bool = True,
    components: bool = False,
    gemm_side: Optional[int] = GEMM_SIDE,
    compile: bool = False,
    log: Callable[[str], None] = print,
    **timing,
) -> dict:
    """Runs :func:`run_benchmark` (and :func:`run_component_benchmark`)
    and adds the markdown tables to the report.

    Args:
        models, dtypes, memory: See :func:`run_benchmark`.
        components (bool): Also time the SLaK-T components.
        gemm_side (int, optional): See :func:`run_benchmark`.
        log (callable): Progress output.
        timing: ``sizes``, ``batches``, ``threads``, ``warmup``,
            ``repeats`` and ``device``, passed to both.

    Returns:
        dict: The JSON-able report; ``table`` holds the fp32 table and
        the dtype table (when a dtype other than fp32 ran) and the rate
        table (with the GEMM reference), ``dtype_table`` and
        ``rate_table`` the latter two, ``component_table`` the
        components'.
    """
    report = run_benchmark(
        models=models,
        memory=memory,
        dtypes=dtypes,
        gemm_side=gemm_side,
        compile=compile,
        log=log,
        **timing,
    )
    tables = []
    if 'fp32' in dtypes:
        tables.append(format_table(report))
    if compile:
        report['compile_table'] = format_compile_table(report)
        tables.append(report['compile_table'])
    if any(d != 'fp32' for d in dtypes):
        report['dtype_table'] = format_dtype_table(report)
        tables.append(report['dtype_table'])
    if report['gemm']:
        report['rate_table'] = format_rate_table(report)
        tables.append(report['rate_table'])
    report['table'] = '\n\n'.join(tables)
    if components:
        report['components'] = run_component_benchmark(log=log, **timing)
        report['component_table'] = format_component_table(
            report['components']
        )
    return report

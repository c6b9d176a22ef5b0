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
  Subprocesses keep the models from sharing one high-water mark. On CUDA,
  ``torch.cuda.max_memory_allocated`` over the same steps, in process.

With ``dtypes`` holding ``'bf16'`` the same steps also run under
``torch.autocast(device, dtype=torch.bfloat16)`` (interleaved with the fp32
ones), and the bf16 eval outputs are compared with the fp32 ones of the
same model on the same images (max abs difference over max abs).

Models: ``slak_t`` (SLaK-T as users build it, default ``backend``),
``slak_t_deploy`` (the same after ``switch_to_deploy``, eval only),
``slak_t_reference`` (``backend='reference'``: NCHW, one ``nn.Conv2d`` +
BN per branch, as released) and ``convnext_t`` (mmpretrain's ConvNeXt-T).
All are backbones in classification mode (global pooling, final norm).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

MODEL_NAMES = ('slak_t', 'slak_t_deploy', 'slak_t_reference', 'convnext_t')
EVAL_ONLY = ('slak_t_deploy',)
# --dtype name -> autocast dtype (None: no autocast).
DTYPES = {'fp32': None, 'bf16': torch.bfloat16}


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


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(images: torch.Tensor, dtype: str):
    """Autocast for ``dtype`` (a key of :data:`DTYPES`) on the device of
    ``images``; disabled for ``'fp32'``."""
    if dtype not in DTYPES:
        raise ValueError(
            f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}'
        )
    cast = DTYPES[dtype]
    return torch.autocast(
        images.device.type, dtype=cast, enabled=cast is not None
    )


def make_eval_step(
    model: nn.Module, images: torch.Tensor, dtype: str = 'fp32'
) -> Callable:
    """Returns a callable running one eval forward pass (under autocast
    for ``dtype='bf16'``)."""

    def step():
        model.eval()
        with torch.no_grad(), _autocast(images, dtype):
            model(images)

    return step


def make_train_step(
    model: nn.Module, images: torch.Tensor, dtype: str = 'fp32'
) -> Callable:
    """Returns a callable running one train step (forward, backward, AdamW).

    Args:
        model (nn.Module): A backbone returning a tuple of ``(N, C)``
            pooled features.
        images (Tensor): ``(N, 3, H, W)``.
        dtype (str): ``'fp32'``, or ``'bf16'`` for forward and loss under
            autocast (parameters, gradients and AdamW stay fp32).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with _autocast(images, dtype):
            loss = sum(out.float().mean() for out in model(images))
        loss.backward()
        optimizer.step()

    return step


def output_error(model: nn.Module, images: torch.Tensor, dtype: str) -> float:
    """Max abs difference of the eval outputs under ``dtype`` from the
    fp32 ones, over the max abs of the fp32 outputs."""
    model.eval()
    with torch.no_grad():
        expected = model(images)
        with _autocast(images, dtype):
            actual = model(images)
    scale = max(e.abs().max().item() for e in expected)
    diff = max(
        (a.float() - e).abs().max().item() for a, e in zip(actual, expected)
    )
    return diff / max(scale, 1e-12)


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
    _synchronize(device)
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _read_status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_train_memory_here(
    name: str,
    size: int,
    batch: int,
    device: str,
    steps: int = 3,
    dtype: str = 'fp32',
) -> float:
    """Peak memory (MiB) that ``steps`` train steps add, in this process.

    On CPU this must run in a fresh process (see the module docstring).
    """
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(name).to(dev)
    images = torch.randn(batch, 3, size, size, device=dev)
    train_step = make_train_step(model, images, dtype)
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        for _ in range(steps):
            train_step()
        torch.cuda.synchronize(dev)
        return (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    base_kib = _read_status_kib('VmRSS')
    try:
        # Resets VmHWM to the current RSS (Linux >= 4.0).
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        hwm_reset = True
    except OSError:
        hwm_reset = False
    for _ in range(steps):
        train_step()
    peak_kib = _read_status_kib('VmHWM') if hwm_reset else None
    if peak_kib is None or base_kib is None:
        # Without /proc: the process-lifetime peak, an upper bound.
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base_kib = base_kib or 0
    return (peak_kib - base_kib) / 1024


def measure_train_memory(
    name: str,
    size: int,
    batch: int,
    device: str,
    threads: int,
    dtype: str = 'fp32',
) -> float:
    """Runs :func:`measure_train_memory_here` in a fresh subprocess."""
    code = (
        'import torch, sys; '
        f'torch.set_num_threads({threads}); '
        'from slak_mm.analysis.benchmark import measure_train_memory_here; '
        f'print(measure_train_memory_here({name!r}, {size}, {batch}, '
        f'{device!r}, dtype={dtype!r}))'
    )
    result = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
    )
    return float(result.stdout.strip().splitlines()[-1])


def _prepare_run(
    sizes: Sequence[int], batches: Sequence[int], threads: int, device: str
) -> torch.device:
    """Checks that sizes and batches pair up, sets the thread count and
    returns the device."""
    if len(sizes) != len(batches):
        raise ValueError(
            f'give one batch size per input size, got sizes {list(sizes)} '
            f'and batches {list(batches)}'
        )
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
        dtypes (Sequence[str]): Keys of :data:`DTYPES`; every model runs
            in each (``'bf16'``: under autocast), interleaved.
        log (callable): Progress output.
    """
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(
                f'dtype must be one of {sorted(DTYPES)}, got {dtype!r}'
            )
    dev = _prepare_run(sizes, batches, threads, device)
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
    )
    for size, batch in zip(sizes, batches):
        torch.manual_seed(0)
        images = torch.randn(batch, 3, size, size, device=dev)
        built = {name: build_model(name).to(dev) for name in models}
        steps = {}
        for dtype in dtypes:
            for name, model in built.items():
                key = f'{name}/{dtype}'
                steps[f'{key}/eval'] = make_eval_step(model, images, dtype)
                if name not in EVAL_ONLY:
                    steps[f'{key}/train'] = make_train_step(
                        model, images, dtype
                    )
        log(f'timing {size}x{size}, batch {batch}: {len(steps)} steps')
        seconds = time_interleaved(steps, dev, warmup, repeats)
        for dtype in dtypes:
            for name in models:
                entry = dict(model=name, size=size, batch=batch, dtype=dtype)
                for mode in ('eval', 'train'):
                    key = f'{name}/{dtype}/{mode}'
                    if key in seconds:
                        median = statistics.median(seconds[key])
                        entry[f'{mode}_seconds'] = seconds[key]
                        entry[f'{mode}_images_per_s'] = batch / median
                if DTYPES[dtype] is not None:
                    entry['output_rel_error'] = output_error(
                        built[name], images, dtype
                    )
                if memory and name not in EVAL_ONLY:
                    log(f'train memory of {name} at {size} in {dtype}')
                    entry['train_peak_mib'] = measure_train_memory(
                        name, size, batch, device, threads, dtype
                    )
                report['results'].append(entry)
        del built, steps
    return report


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
        lines.append('| ' + ' | '.join(cells) + ' |')
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
        cells.append(f'{entry["output_rel_error"]:.1e}')
        mem = entry.get('train_peak_mib')
        cells.append(f'{mem:.0f}' if mem is not None else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def save_report(report: dict, path: str) -> None:
    """Writes the report as JSON, creating the folder if needed."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w') as file:
        json.dump(report, file, indent=2)


# (kernel K, channels C) of the four SLaK-T stages; maps are size / 4 / 2^i.
SLAK_T_STAGES = ((51, 124), (49, 249), (47, 499), (13, 998))


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
            module = LargeKernelConv(channels, kernel, 5, backend=name).to(
                x.device
            )
            if variant == 'ref':
                inputs = x
            else:
                inputs = x.contiguous(memory_format=torch.channels_last)

            def forward(module=module, inputs=inputs):
                return module(inputs)

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
            mlp = BlockMLP(*module)

            def forward(mlp=mlp, inputs=inputs, backend=backend):
                return mlp(inputs, backend)

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
    for size, batch in zip(sizes, batches):
        for stage, (kernel, channels) in enumerate(SLAK_T_STAGES):
            side = size // 4 // 2**stage
            torch.manual_seed(0)
            x = torch.randn(batch, channels, side, side, device=dev)
            for component in ('large_kernel', 'mlp'):
                log(f'timing {component} of stage {stage} at {size}')
                steps = _component_steps(component, channels, kernel, x)
                seconds = time_interleaved(steps, dev, warmup, repeats)
                entry = dict(
                    size=size,
                    batch=batch,
                    stage=stage,
                    component=component,
                    map=side,
                    channels=channels,
                    kernel=kernel,
                )
                for key, values in seconds.items():
                    variant, mode = key.split('/')
                    entry[f'{variant}_{mode}_ms'] = (
                        statistics.median(values) * 1e3
                    )
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
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)

"""Worker of the CPU benchmark's peak-train-memory measurement.

    python -m slak_mm.analysis.train_memory slak_t 224 4 --threads 2

Builds one benchmarked model (:func:`slak_mm.analysis.benchmark.build_model`)
in this fresh process and prints the memory (MiB) that three train steps
add: on CPU, the peak resident set size (``VmHWM``, reset just before the
first step) minus the resident size then; on CUDA,
``torch.cuda.max_memory_allocated`` minus what was allocated before. See
:mod:`slak_mm.analysis.benchmark` for why a fresh process is needed.
"""

import argparse
import resource
from typing import Optional

import torch

from .benchmark import MODEL_NAMES, build_model
from .timing import PRECISIONS, backbone_steps


def _read_status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Resets ``VmHWM`` to the current RSS (Linux >= 4.0)."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
    except OSError:
        return False
    return True


def measure_train_memory_here(
    name: str,
    size: int,
    batch: int,
    device: str,
    steps: int = 3,
    dtype: str = 'fp32',
) -> float:
    """Peak memory (MiB) that ``steps`` train steps add, in this process.

    On CPU this is only meaningful in a fresh process (see the module
    docstring).
    """
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(name).to(dev)
    images = torch.randn(batch, 3, size, size, device=dev)
    train_step = backbone_steps(model, images, dtype)['train']
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        for _ in range(steps):
            train_step()
        torch.cuda.synchronize(dev)
        return (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    base_kib = _read_status_kib('VmRSS')
    hwm_reset = _reset_peak_rss()
    for _ in range(steps):
        train_step()
    peak_kib = _read_status_kib('VmHWM') if hwm_reset else None
    if peak_kib is None or base_kib is None:
        # Without /proc: the process-lifetime peak, an upper bound.
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base_kib = base_kib or 0
    return (peak_kib - base_kib) / 1024


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', choices=MODEL_NAMES)
    parser.add_argument('size', type=int, help='square input size')
    parser.add_argument('batch', type=int)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--dtype', default='fp32', choices=list(PRECISIONS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mib = measure_train_memory_here(
        args.model, args.size, args.batch, args.device, dtype=args.dtype
    )
    print(mib)
    return mib


if __name__ == '__main__':
    main()

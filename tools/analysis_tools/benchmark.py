"""Speed and memory of SLaK-T (default, deploy, release-style reference)
against mmpretrain's ConvNeXt-T, on CPU or CUDA.

Examples (the tables in docs/speed.md):
    python tools/analysis_tools/benchmark.py --threads 2 \
        --out work_dirs/benchmark.json
    python tools/analysis_tools/benchmark.py --dtype fp32 bf16 --no-memory

On CPU a 2048^3 oneDNN product per dtype is timed in the same rounds as
the models, and a last table gives each model's eval GFLOP/s as a fraction
of it (--no-gemm skips it). A dtype oneDNN has no native product for on
the CPU (bf16 without AVX512-BF16/AMX) gets no product and no rows there.
"""

import argparse

from slak_mm.analysis.benchmark import (
    GEMM_SIDE,
    MODEL_NAMES,
    benchmark_report,
    save_report,
)
from slak_mm.analysis.timing import PRECISIONS
from slak_mm.utils.cli import add_benchmark_arguments, parse_checked


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_arguments(
        parser,
        sizes=[224, 512],
        batches=[4, 1],
        warmup=2,
        repeats=5,
        device='cpu',
        models=MODEL_NAMES,
        out='work_dirs/benchmark.json',
    )
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument(
        '--no-memory', action='store_true', help='skip peak memory'
    )
    parser.add_argument(
        '--components',
        action='store_true',
        help='also time the large-kernel module and the MLP of every '
        'SLaK-T stage, reference against default (a second table)',
    )
    parser.add_argument(
        '--no-gemm',
        action='store_true',
        help='skip the oneDNN GEMM reference (a 2048^3 product per dtype, '
        'timed in the same rounds; default on CPU) and the GFLOP/s table',
    )
    parser.add_argument(
        '--compile',
        action='store_true',
        help='also time every model under torch.compile (inductor) in the '
        'same rounds: a table of compiled over eager images/s and the '
        'first-call (compile) seconds',
    )
    parser.add_argument(
        '--dtype',
        nargs='+',
        default=['fp32'],
        choices=list(PRECISIONS),
        help='fp32 and/or bf16 (autocast); with both, a second table gives '
        'bf16 speed over fp32 and the bf16 output error',
    )
    return parse_checked(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    report = benchmark_report(
        models=args.models,
        dtypes=args.dtype,
        memory=not args.no_memory,
        components=args.components,
        compile=args.compile,
        gemm_side=None if args.no_gemm or args.device != 'cpu' else GEMM_SIDE,
        sizes=args.sizes,
        batches=args.batches,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
    )
    save_report(report, args.out)
    print(report['table'])
    if args.components:
        print()
        print(report['component_table'])
    print(f'JSON written to {args.out}')


if __name__ == '__main__':
    main()

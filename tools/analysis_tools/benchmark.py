"""Speed and memory of SLaK-T (default, deploy, release-style reference)
against mmpretrain's ConvNeXt-T, on CPU or CUDA.

Examples (the tables in docs/speed.md):
    python tools/analysis_tools/benchmark.py --threads 2 \
        --out work_dirs/benchmark.json
    python tools/analysis_tools/benchmark.py --dtype fp32 bf16 --no-memory
"""

import argparse

from slak_mm.analysis.benchmark import (
    DTYPES,
    MODEL_NAMES,
    format_component_table,
    format_dtype_table,
    format_table,
    run_benchmark,
    run_component_benchmark,
    save_report,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 512])
    parser.add_argument(
        '--batches',
        type=int,
        nargs='+',
        default=[4, 1],
        help='one batch size per entry of --sizes',
    )
    parser.add_argument(
        '--models', nargs='+', default=list(MODEL_NAMES), choices=MODEL_NAMES
    )
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu')
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
        '--dtype',
        nargs='+',
        default=['fp32'],
        choices=list(DTYPES),
        help='fp32 and/or bf16 (autocast); with both, a second table gives '
        'bf16 speed over fp32 and the bf16 output error',
    )
    parser.add_argument('--out', default='work_dirs/benchmark.json')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    timing = dict(
        sizes=args.sizes,
        batches=args.batches,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
    )
    report = run_benchmark(
        models=args.models,
        memory=not args.no_memory,
        dtypes=args.dtype,
        **timing,
    )
    tables = []
    if 'fp32' in args.dtype:
        tables.append(format_table(report))
    if any(d != 'fp32' for d in args.dtype):
        report['dtype_table'] = format_dtype_table(report)
        tables.append(report['dtype_table'])
    table = '\n\n'.join(tables)
    report['table'] = table
    if args.components:
        report['components'] = run_component_benchmark(**timing)
        report['component_table'] = format_component_table(
            report['components']
        )
    save_report(report, args.out)
    print(table)
    if args.components:
        print()
        print(report['component_table'])
    print(f'JSON written to {args.out}')


if __name__ == '__main__':
    main()

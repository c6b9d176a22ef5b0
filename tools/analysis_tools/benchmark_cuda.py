"""CUDA benchmark of SLaK-T's large kernels (Triton, cuDNN, release-style
NCHW) and of the SLaK-T backbone against timm's ConvNeXt-T.

Prints two markdown tables (see slak_mm/analysis/cuda_benchmark.py for
what is timed and how) and writes them with the raw numbers as JSON.

Example (what tools/misc/gpu_check.sh runs):
    python tools/analysis_tools/benchmark_cuda.py \
        --out work_dirs/benchmark_cuda.json

Needs torch with CUDA, Triton, timm (for ConvNeXt-T) and mmengine; not
mmcv, mmdet, mmseg or mmpretrain.
"""

import argparse
import json
import os

from slak_mm.analysis.cuda_benchmark import (
    BACKBONES,
    DEFAULT_BANDWIDTH_TBS,
    DEFAULT_PEAK_TFLOPS,
    LARGE_KERNEL_PATHS,
    PRECISIONS,
    environment_report,
    format_backbone_table,
    format_component_table,
    run_backbone_benchmark,
    run_component_benchmark,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 512])
    parser.add_argument(
        '--batches',
        type=int,
        nargs='+',
        default=[64, 16],
        help='one batch size per entry of --sizes',
    )
    parser.add_argument(
        '--precisions', nargs='+', default=list(PRECISIONS), choices=PRECISIONS
    )
    parser.add_argument(
        '--paths',
        nargs='+',
        default=list(LARGE_KERNEL_PATHS),
        choices=LARGE_KERNEL_PATHS,
        help='large-kernel paths of the component table',
    )
    parser.add_argument(
        '--models', nargs='+', default=list(BACKBONES), choices=BACKBONES
    )
    parser.add_argument(
        '--skip-components', action='store_true', help='no component table'
    )
    parser.add_argument(
        '--skip-backbones', action='store_true', help='no backbone table'
    )
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument(
        '--peak-tflops',
        type=float,
        default=DEFAULT_PEAK_TFLOPS,
        help='fp32 CUDA-core rate for the Triton bound (default: H200)',
    )
    parser.add_argument(
        '--bandwidth-tbs',
        type=float,
        default=DEFAULT_BANDWIDTH_TBS,
        help='memory bandwidth in TB/s for the Triton bound (default: H200)',
    )
    parser.add_argument(
        '--device',
        default='cuda',
        help="'cuda'; 'cpu' is a dry run of the code path only (Triton "
        'kernels under TRITON_INTERPRET=1, perf_counter timing)',
    )
    parser.add_argument('--out', default='work_dirs/benchmark_cuda.json')
    args = parser.parse_args(argv)
    if len(args.sizes) != len(args.batches):
        parser.error(
            f'give one batch size per size, got --sizes {args.sizes} and '
            f'--batches {args.batches}'
        )
    return args


def main(argv=None):
    import torch

    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda, but torch sees no CUDA device')
    report = dict(environment=environment_report(device), args=vars(args))
    print(json.dumps(report['environment']))
    timing = dict(
        sizes=args.sizes,
        batches=args.batches,
        precisions=args.precisions,
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
    )
    tables = []
    if not args.skip_components:
        report['components'] = run_component_benchmark(
            paths=args.paths,
            peak_tflops=args.peak_tflops,
            bandwidth_tbs=args.bandwidth_tbs,
            **timing,
        )
        report['component_table'] = format_component_table(
            report['components']
        )
        tables.append(report['component_table'])
    if not args.skip_backbones:
        report['backbones'] = run_backbone_benchmark(
            models=args.models, **timing
        )
        report['backbone_table'] = format_backbone_table(report['backbones'])
        tables.append(report['backbone_table'])
    folder = os.path.dirname(args.out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(args.out, 'w') as file:
        json.dump(report, file, indent=2)
    for table in tables:
        print()
        print(table)
    print(f'JSON written to {args.out}')
    return report


if __name__ == '__main__':
    main()

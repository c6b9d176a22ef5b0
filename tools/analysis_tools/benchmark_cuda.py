"""CUDA benchmark of SLaK-T's large kernels on each backend ('triton',
'native': cuDNN, 'reference': release-style NCHW) and of the SLaK-T
backbone against timm's ConvNeXt-T.

Prints two markdown tables (see slak_mm/analysis/cuda_benchmark.py for
what is timed and how) and writes them with the raw numbers as JSON.

Example (what tools/misc/gpu_check.sh runs):
    python tools/analysis_tools/benchmark_cuda.py \
        --out work_dirs/benchmark_cuda.json

``--device cpu`` is a dry run of the code path only (Triton kernels under
``TRITON_INTERPRET=1``, ``perf_counter`` timing).

Needs torch with CUDA, Triton, timm (for ConvNeXt-T) and mmengine; not
mmcv, mmdet, mmseg or mmpretrain.
"""

import argparse

from slak_mm.analysis.cuda_benchmark import (
    BACKBONES,
    DEFAULT_BANDWIDTH_TBS,
    DEFAULT_PEAK_TFLOPS,
    LARGE_KERNEL_BACKENDS,
    cuda_benchmark_report,
)
from slak_mm.analysis.timing import PRECISIONS, save_report
from slak_mm.utils.cli import add_benchmark_arguments, parse_checked


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_benchmark_arguments(
        parser,
        sizes=[224, 512],
        batches=[64, 16],
        warmup=3,
        repeats=10,
        device='cuda',
        models=BACKBONES,
        out='work_dirs/benchmark_cuda.json',
    )
    parser.add_argument(
        '--precisions',
        nargs='+',
        default=list(PRECISIONS),
        choices=list(PRECISIONS),
    )
    parser.add_argument(
        '--backends',
        nargs='+',
        default=list(LARGE_KERNEL_BACKENDS),
        choices=LARGE_KERNEL_BACKENDS,
        help='SLaK backends of the component table',
    )
    parser.add_argument(
        '--skip-components', action='store_true', help='no component table'
    )
    parser.add_argument(
        '--skip-backbones', action='store_true', help='no backbone table'
    )
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
    return parse_checked(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = cuda_benchmark_report(
            device=args.device,
            components=not args.skip_components,
            backbones=not args.skip_backbones,
            backends=args.backends,
            models=args.models,
            peak_tflops=args.peak_tflops,
            bandwidth_tbs=args.bandwidth_tbs,
            sizes=args.sizes,
            batches=args.batches,
            precisions=args.precisions,
            warmup=args.warmup,
            repeats=args.repeats,
        )
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    report['args'] = vars(args)
    save_report(report, args.out)
    for key in ('component_table', 'backbone_table'):
        if key in report:
            print()
            print(report[key])
    print(f'JSON written to {args.out}')
    return report


if __name__ == '__main__':
    main()

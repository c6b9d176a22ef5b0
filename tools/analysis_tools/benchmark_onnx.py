"""Time onnxruntime against our PyTorch path on the deploy-form model.

Example (the SLaK-T classifier at 224x224, 2 CPU threads):
    python tools/analysis_tools/benchmark_onnx.py \
        configs/classification/slak_t_in1k.py --shape 224 --threads 2

Random weights unless a checkpoint is given (the timing does not depend on
them). See docs/deploy.md for measured figures.
"""

import argparse

from mmengine.config import DictAction

from slak_mm.analysis.onnx_speed import format_onnx_speed, run_onnx_speed
from slak_mm.utils.cli import add_size_pair_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='onnxruntime against PyTorch, CPU eval latency.'
    )
    parser.add_argument(
        'config', help='a classification, segmentation or detection config'
    )
    parser.add_argument('--checkpoint', help='weights (default: random)')
    add_size_pair_argument(parser, '--shape', help='input size')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    report = run_onnx_speed(
        args.config,
        args.checkpoint,
        shape=args.shape,
        batch_size=args.batch_size,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        cfg_options=args.cfg_options,
    )
    print(format_onnx_speed(report))
    return report


if __name__ == '__main__':
    main()

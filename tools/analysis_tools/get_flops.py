"""Parameters and MACs of a model, dense and sparse, per stage.

Examples:
    python tools/analysis_tools/get_flops.py CONFIG --shape 224
    python tools/analysis_tools/get_flops.py CONFIG --shape 224 \
        --uniform-sparsity 0.4
    python tools/analysis_tools/get_flops.py CONFIG \
        --checkpoint sparse.pth  # masks: w != 0
    python tools/analysis_tools/get_flops.py CONFIG \
        --masks masks.pth [--masks-key KEY]

MACs count the multiply-accumulates of convolutions and linear layers (the
"FLOPs" of the paper and of OpenMMLab's get_flops); sparse MACs count only
those with a kept weight. The input is one image of the given shape fed to
the network in ``mode='tensor'`` (classifiers, segmentors: inference without
post-processing; an auxiliary head that only runs in training is listed
without MACs). For mmdet detectors the first table counts the backbone and
neck (``extract_feat``), the second the whole detector in ``mode='tensor'``
with generated image metadata; its RoI-head MACs depend on the number of
proposals the RPN returns for the (all-zero) input, which is printed (in
that mode mask heads run on every proposal, at inference only on the kept
detections).
"""

import argparse
import json

from mmengine.config import DictAction

from slak_mm.analysis.flops import config_complexity, format_result
from slak_mm.utils.cli import add_size_pair_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Count dense and sparse parameters and MACs.'
    )
    parser.add_argument('config')
    add_size_pair_argument(parser, '--shape', help='input image size')
    sparse = parser.add_mutually_exclusive_group()
    sparse.add_argument(
        '--checkpoint', help='load these weights; masks are weight != 0'
    )
    sparse.add_argument(
        '--masks', help='.pth holding {parameter name: bool tensor}'
    )
    sparse.add_argument(
        '--uniform-sparsity',
        type=float,
        help='random masks at this sparsity on every 2-D/4-D weight',
    )
    parser.add_argument(
        '--masks-key', help='entry of the --masks file holding the masks'
    )
    parser.add_argument('--out-json', help='also write the counts here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = config_complexity(
        args.config,
        args.shape,
        checkpoint=args.checkpoint,
        masks_file=args.masks,
        masks_key=args.masks_key,
        uniform_sparsity=args.uniform_sparsity,
        cfg_options=args.cfg_options,
    )
    print(format_result(result))
    if args.out_json:
        with open(args.out_json, 'w') as f:
            json.dump(result.to_dict(), f, indent=2)
    return result.report


if __name__ == '__main__':
    main()

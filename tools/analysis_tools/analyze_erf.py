"""Effective receptive field of a model, as in the RepLKNet/SLaK papers.

Example (the paper uses 50 ImageNet validation images at 1024x1024):
    python tools/analysis_tools/analyze_erf.py CONFIG data/imagenet/val \
        --checkpoint slak_tiny.pth --num-images 50 --input-size 1024 \
        --out-dir work_dirs/erf_slak_tiny

Writes ``erf.npy`` (mean positive input gradient of the central pixel of
``--layer``, before normalisation), ``erf_heatmap.png`` and
``erf_ratios.json``, and prints the high-contribution area ratios at
thresholds 0.2/0.3/0.5/0.99.
"""

import argparse

from mmengine.config import DictAction

from slak_mm.analysis.erf import analyze_config_erf
from slak_mm.utils.cli import add_size_pair_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Effective receptive field and its area ratios.'
    )
    parser.add_argument('config')
    parser.add_argument('image_dir', help='folder of images (recursive)')
    parser.add_argument('--checkpoint', help='weights (state_dict)')
    parser.add_argument('--num-images', type=int, default=50)
    add_size_pair_argument(
        parser, '--input-size', default=1024, help='input image size'
    )
    parser.add_argument(
        '--layer',
        default='backbone.stages.-1',
        help='module whose output is the feature map (default: last stage)',
    )
    parser.add_argument('--out-dir', default='work_dirs/erf')
    parser.add_argument('--title', help='heatmap title')
    parser.add_argument(
        '--seed', type=int, default=0, help='for random init (no checkpoint)'
    )
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = analyze_config_erf(
        args.config,
        args.image_dir,
        checkpoint=args.checkpoint,
        num_images=args.num_images,
        input_size=args.input_size,
        layer=args.layer,
        seed=args.seed,
        cfg_options=args.cfg_options,
    )
    result.save(args.out_dir, args.title)
    print(result.summary())
    print(f'Saved erf.npy, erf_heatmap.png, erf_ratios.json to {args.out_dir}')
    return result.erf, result.ratios


if __name__ == '__main__':
    main()

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
import contextlib
import json
import logging
import os

import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger

from slak_mm.analysis.erf import (
    ERF_THRESHOLDS,
    accumulate_erf,
    area_ratios,
    layer_output_fn,
    list_images,
    load_image,
    save_heatmap,
)
from slak_mm.tools_lib import build_model_from_config, load_model_checkpoint

# ImageNet statistics on the 0-255 scale, used when the config has none.
DEFAULT_MEAN = (123.675, 116.28, 103.53)
DEFAULT_STD = (58.395, 57.12, 57.375)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Effective receptive field and its area ratios.'
    )
    parser.add_argument('config')
    parser.add_argument('image_dir', help='folder of images (recursive)')
    parser.add_argument('--checkpoint', help='weights (state_dict)')
    parser.add_argument('--num-images', type=int, default=50)
    parser.add_argument(
        '--input-size', type=int, nargs='+', default=[1024], help='H or H W'
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


@contextlib.contextmanager
def quiet_current_logger(level=logging.WARNING):
    """Raises mmengine's current logger to ``level`` for the block."""
    logger = MMLogger.get_current_instance()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def normalization(cfg):
    preprocessor = cfg.model.get('data_preprocessor') or {}
    return (
        preprocessor.get('mean', DEFAULT_MEAN),
        preprocessor.get('std', DEFAULT_STD),
    )


def main(argv=None):
    args = parse_args(argv)
    if len(args.input_size) not in (1, 2):
        raise SystemExit(f'--input-size takes H or H W: {args.input_size}')
    size = tuple(args.input_size * 2)[:2]
    model, cfg = build_model_from_config(args.config, args.cfg_options)
    if args.checkpoint:
        load_model_checkpoint(model, args.checkpoint)
    else:
        print('No --checkpoint: using randomly initialised weights')
        torch.manual_seed(args.seed)
        # mmengine logs every parameter's initialisation at INFO level
        # (hundreds of lines); only warnings matter here.
        with quiet_current_logger():
            model.init_weights()
    model.eval()
    mean, std = normalization(cfg)
    files = list_images(args.image_dir, args.num_images)
    features = layer_output_fn(model, args.layer)
    erf, used, skipped = accumulate_erf(
        features, (load_image(f, size, mean, std) for f in files)
    )
    ratios = area_ratios(erf)
    os.makedirs(args.out_dir, exist_ok=True)
    np.save(os.path.join(args.out_dir, 'erf.npy'), erf)
    save_heatmap(
        erf, os.path.join(args.out_dir, 'erf_heatmap.png'), args.title
    )
    print(
        f'ERF of {args.layer} over {used} images ({skipped} skipped, NaN) '
        f'at {size[0]}x{size[1]}'
    )
    print('threshold  side  area ratio')
    for threshold in ERF_THRESHOLDS:
        found = ratios[threshold]
        if found is None:
            print(f'{threshold:<9}  none (exceeds the largest square)')
        else:
            print(f'{threshold:<9}  {found[0]:<4}  {found[1]:.4f}')
    with open(os.path.join(args.out_dir, 'erf_ratios.json'), 'w') as f:
        json.dump(
            dict(
                layer=args.layer,
                input_size=list(size),
                num_images=used,
                ratios={
                    str(t): None if r is None else dict(side=r[0], ratio=r[1])
                    for t, r in ratios.items()
                },
            ),
            f,
            indent=2,
        )
    print(f'Saved erf.npy, erf_heatmap.png, erf_ratios.json to {args.out_dir}')
    return erf, ratios


if __name__ == '__main__':
    main()

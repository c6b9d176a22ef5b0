"""Writes small, learnable datasets in the ADE20K / COCO / ImageNet layouts.

In ade20k, coco and imagenet ('all' writes these three) each image shows
coloured shapes whose colour and shape give away the class. In
ade20k-context the class of each vertical stripe shows only in a coloured
marker at least 21 rows away from every labelled pixel of the stripe, so
labels need long-range context (width a multiple of 4, height >= 48).
The same arguments always give byte-identical files.

Examples:
    python tools/misc/make_synthetic_data.py ade20k --out data
    python tools/misc/make_synthetic_data.py all --out data --num-train 64 \\
        --num-val 16 --image-size 128 --num-classes 5 --seed 1
    python tools/misc/make_synthetic_data.py ade20k-context --out data/context \\
        --num-train 128 --num-val 32 --image-size 96

Layouts written under ``--out``:
    ADEChallengeData2016/  mmseg ADE20KDataset: data_root=<out>/ADEChallengeData2016
                           (ade20k or ade20k-context)
    coco/                  mmdet CocoDataset: data_root=<out>/coco/
    imagenet/              mmpretrain ImageNet: data_root=<out>/imagenet
"""  # noqa: E501

import argparse
import sys
from pathlib import Path

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from slak_mm.datasets import KNOWN_LAYOUTS, generate_datasets  # noqa: E402
from slak_mm.utils.cli import add_size_pair_argument  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]),
    )
    parser.add_argument(
        'layouts',
        nargs='+',
        choices=[*KNOWN_LAYOUTS, 'all'],
        help='which layout(s) to write',
    )
    parser.add_argument(
        '--out', default='data', help='output root (default: data)'
    )
    parser.add_argument('--num-train', type=int, default=32)
    parser.add_argument('--num-val', type=int, default=8)
    add_size_pair_argument(
        parser,
        '--image-size',
        default=96,
        names=('WIDTH', 'HEIGHT'),
        help='image size',
    )
    parser.add_argument(
        '--num-classes',
        type=int,
        default=4,
        help='classes drawn (first N of ADE20K / COCO; N shapes for '
        'ImageNet) (default: 4)',
    )
    parser.add_argument(
        '--max-objects',
        type=int,
        default=3,
        help='most objects per ade20k / coco image (default: 3)',
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace layout directories this tool wrote before',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        summaries = generate_datasets(
            args.layouts,
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            num_classes=args.num_classes,
            max_objects=args.max_objects,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        sys.exit(f'error: {error}')
    for summary in summaries.values():
        print(
            f'{summary["layout"]}: {summary["num_train"]} train + '
            f'{summary["num_val"]} val images, {summary["num_classes"]} '
            f'classes {summary["classes"]} in {summary["data_root"]}'
        )
        for key in ('train_dataset', 'val_dataset', 'val_evaluator'):
            if key in summary:
                print(f'  {key} = {summary[key]!r}')


if __name__ == '__main__':
    main()

"""Export a trained SLaK model in deploy form (BN fused, small kernel folded).

Example:
    python tools/model_converters/deploy.py CONFIG \
        work_dirs/x/epoch_300.pth slak_deploy.pth --shape 224 224
    # Later, evaluate or run the deployed file with the same config:
    python tools/test.py CONFIG slak_deploy.pth \
        --cfg-options model.backbone.deploy=True

Only ``meta`` and ``state_dict`` are written unless ``--keep-extra`` is
given: every other top-level entry (optimizer, param schedulers, message
hub, an EMA copy, the sparse-training mask state) describes the training-form
parameters and is dropped.
"""

import argparse

from mmengine.config import DictAction

from slak_mm.converters import deploy_checkpoint
from slak_mm.utils.cli import add_size_pair_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fuse a SLaK backbone and save the deployed checkpoint.'
    )
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('checkpoint', help='trained checkpoint (state_dict)')
    parser.add_argument('out', help='where to save the deployed checkpoint')
    add_size_pair_argument(parser, '--shape', help='test batch image size')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-5,
        help='largest allowed max|a-b| / max|a| between the outputs',
    )
    parser.add_argument(
        '--keep-extra',
        action='store_true',
        help='keep top-level entries other than meta and state_dict',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.backbone.with_cp=False',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    shape = args.shape
    report = deploy_checkpoint(
        args.config,
        args.checkpoint,
        args.out,
        shape=shape,
        batch_size=args.batch_size,
        tolerance=args.tolerance,
        keep_extra=args.keep_extra,
        cfg_options=args.cfg_options,
    )
    print(
        f'Compared the {report["compared"]} on a '
        f'{args.batch_size}x3x{shape[0]}x{shape[1]} test batch: '
        f'max abs diff {report["max_abs_diff"]:.3e}, relative '
        f'{report["rel_diff"]:.3e} (tolerance {args.tolerance:.0e})'
    )
    print(
        f'Parameters: {report["num_params_before"]} -> '
        f'{report["num_params_after"]}'
    )
    if report['dropped']:
        print(f'Dropped checkpoint entries: {report["dropped"]}')
    if report['kept_extra']:
        print(
            f'Kept extra entries (they refer to training-form parameters): '
            f'{report["kept_extra"]}'
        )
    print(
        f'Saved {args.out}; load it with --cfg-options '
        'model.backbone.deploy=True'
    )
    return report


if __name__ == '__main__':
    main()

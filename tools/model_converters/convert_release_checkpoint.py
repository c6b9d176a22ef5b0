"""Convert released SLaK checkpoints to slak_mm (OpenMMLab 2.x) files.

ImageNet release ``{'model': ..., 'args': ...}``:
    python tools/model_converters/convert_release_checkpoint.py \
        SLaK_tiny_checkpoint.pth \
        slak_tiny_in1k_mmpretrain.pth                 # ImageClassifier
    python tools/model_converters/convert_release_checkpoint.py \
        SLaK_tiny_checkpoint.pth \
        slak_tiny_in1k_backbone.pth --backbone-only   # for init_cfg

Downstream release (mmseg 0.x UperNet / mmdet 2.x Cascade Mask R-CNN,
``{'state_dict': {'backbone.<release names>', ...}, 'meta': ...}``):
    python tools/model_converters/convert_release_checkpoint.py \
        upernet_slak_tiny.pth upernet_slak_tiny_mmseg1x.pth \
        --check-config CONFIG
"""

import argparse
import os
import sys

import torch

from slak_mm.converters.release import (
    convert_release_downstream,
    convert_release_imagenet,
    detect_release_kind,
    release_summary,
)
from slak_mm.utils import safe_torch_load


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a released SLaK checkpoint to slak_mm names.'
    )
    parser.add_argument('src', help='released .pth file')
    parser.add_argument('dst', help='where to write the converted file')
    parser.add_argument(
        '--kind',
        choices=['auto', 'imagenet', 'downstream'],
        default='auto',
        help='"imagenet" for {"model": ...} files, "downstream" for '
        'mmseg 0.x / mmdet 2.x files; "auto" decides from the content',
    )
    parser.add_argument(
        '--ema',
        action='store_true',
        help='convert the "model_ema" weights instead of "model"',
    )
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='write only "backbone." keys (for mmdet/mmseg init_cfg)',
    )
    parser.add_argument(
        '--check-config',
        metavar='CONFIG',
        help='build the model of this config and require the converted '
        'keys and shapes to match it',
    )
    return parser.parse_args(argv)


def check_against_config(state_dict, config, filename):
    from slak_mm.apis import build_model_from_config, compare_with_model

    model, _ = build_model_from_config(config)
    missing, unexpected = compare_with_model(state_dict, model, filename)
    if missing or unexpected:
        raise KeyError(
            f'{filename} does not match {config}: missing {missing[:10]}, '
            f'unexpected {unexpected[:10]}'
        )
    print(f'All {len(state_dict)} tensors match the model of {config}.')


def main(argv=None):
    args = parse_args(argv)
    checkpoint = safe_torch_load(args.src)
    kind = args.kind
    if kind == 'auto':
        kind = detect_release_kind(checkpoint, args.src)
    if kind == 'downstream':
        if args.ema or args.backbone_only:
            sys.exit('--ema and --backbone-only apply to ImageNet files')
        converted, notes = convert_release_downstream(checkpoint, args.src)
        for note in notes:
            print(note)
        state_dict = converted['state_dict']
        num_backbone = sum(k.startswith('backbone.') for k in state_dict)
        print(
            f'Renamed {num_backbone} backbone tensors; kept '
            f'{len(state_dict) - num_backbone} neck/head tensors as they are'
        )
    else:
        converted, info = convert_release_imagenet(
            checkpoint, args.src, args.ema, args.backbone_only
        )
        state_dict = converted['state_dict']
        print(release_summary(info, args.dst, args.backbone_only))
    if args.check_config:
        check_against_config(state_dict, args.check_config, args.src)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save(converted, args.dst)
    print(f'Saved {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()

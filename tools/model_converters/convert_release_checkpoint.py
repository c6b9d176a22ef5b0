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

from slak_mm.models.checkpoint import (
    convert_release_backbone,
    convert_release_classifier,
    convert_release_downstream,
    extract_state_dict,
    is_release_state_dict,
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


def detect_kind(checkpoint, filename):
    if not isinstance(checkpoint, dict):
        raise TypeError(f'{filename}: not a dict checkpoint')
    state = checkpoint.get('state_dict')
    if isinstance(state, dict) and any(
        k.startswith('backbone.') for k in state
    ):
        return 'downstream'
    if 'model' in checkpoint or 'model_ema' in checkpoint:
        return 'imagenet'
    raise KeyError(
        f'{filename}: neither a released ImageNet checkpoint ("model") '
        f'nor a downstream one ("state_dict" with "backbone." keys); '
        f'entries: {sorted(checkpoint)[:10]}'
    )


def to_config_text(value):
    """Writes dicts as ``dict(k=v)``, the way OpenMMLab configs read."""
    if isinstance(value, dict):
        items = ', '.join(f'{k}={to_config_text(v)}' for k, v in value.items())
        return f'dict({items})'
    return repr(value)


def format_backbone_cfg(info, extra):
    backbone = dict(type='SLaK', **info['backbone'], **extra)
    body = ',\n        '.join(
        f'{k}={to_config_text(v)}' for k, v in backbone.items()
    )
    return f'backbone=dict(\n        {body})'


def print_summary(info, args):
    backbone = info['backbone']
    print(
        f'arch: {backbone["arch"]}, width_factor: '
        f'{backbone["width_factor"]}, widths: {info["channels"]}\n'
        f'kernel sizes: {backbone["kernel_sizes"]}, small kernel: '
        f'{backbone["small_kernel"]}, decompose: {backbone["decompose"]}\n'
        f'sparsity (zeros in 2-D/4-D weights): {info["sparsity"]:.4f}'
    )
    print('Config keys to set:')
    if args.backbone_only:
        cfg = format_backbone_cfg(
            info,
            dict(
                out_indices=(0, 1, 2, 3),
                init_cfg=dict(
                    type='Pretrained', checkpoint=args.dst, prefix='backbone.'
                ),
            ),
        )
        print(f'model = dict(\n    {cfg})')
    else:
        cfg = format_backbone_cfg(
            info, dict(out_indices=3, gap_before_final_norm=True)
        )
        print(
            f"model = dict(\n    type='ImageClassifier',\n    {cfg},\n"
            f"    neck=None,\n    head=dict(type='LinearClsHead', "
            f'num_classes={info["num_classes"]}, '
            f'in_channels={info["channels"][-1]}))\n'
            f'load_from = {args.dst!r}'
        )


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
    kind = (
        detect_kind(checkpoint, args.src) if args.kind == 'auto' else args.kind
    )
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
        state_key = 'model_ema' if args.ema else 'model'
        release = extract_state_dict(checkpoint, args.src, state_key)
        if not is_release_state_dict(release):
            sys.exit(f'{args.src}: "{state_key}" is not in release names')
        convert = (
            convert_release_backbone
            if args.backbone_only
            else convert_release_classifier
        )
        state_dict, info = convert(release, args.src)
        print_summary(info, args)
        meta = dict(
            slak_release=dict(
                source=os.path.basename(args.src),
                state_key=state_key,
                epoch=checkpoint.get('epoch'),
                sparsity=info['sparsity'],
            )
        )
        converted = dict(meta=meta, state_dict=state_dict)
    if args.check_config:
        check_against_config(state_dict, args.check_config, args.src)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save(converted, args.dst)
    print(f'Saved {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()

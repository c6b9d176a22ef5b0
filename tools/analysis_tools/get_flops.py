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

import torch
from mmengine.config import DictAction

from slak_mm.analysis.complexity import (
    count_complexity,
    masks_from_weights,
    uniform_masks,
)
from slak_mm.tools_lib import (
    build_model_from_config,
    is_mmdet_detector,
    load_model_checkpoint,
)
from slak_mm.utils import safe_torch_load


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Count dense and sparse parameters and MACs.'
    )
    parser.add_argument('config')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=[224], help='H or H W'
    )
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


def load_masks(filename, key=None):
    loaded = safe_torch_load(filename)
    if key is not None:
        if key not in loaded:
            raise KeyError(
                f'{filename}: no {key!r} entry; it has {sorted(loaded)[:10]}'
            )
        loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise TypeError(
            f'{filename}: expected {{parameter name: tensor}}'
            + ('' if key else '; pass --masks-key for a nested entry')
        )
    return {name: mask != 0 for name, mask in loaded.items()}


def main(argv=None):
    args = parse_args(argv)
    if len(args.shape) not in (1, 2):
        raise SystemExit(f'--shape takes H or H W, got {args.shape}')
    height, width = args.shape * 2 if len(args.shape) == 1 else args.shape
    model, cfg = build_model_from_config(args.config, args.cfg_options)
    in_channels = cfg.model.get('backbone', {}).get('in_channels', 3)
    masks, source = None, 'dense'
    if args.checkpoint:
        load_model_checkpoint(model, args.checkpoint)
        masks, source = masks_from_weights(model), args.checkpoint
    elif args.masks:
        masks, source = load_masks(args.masks, args.masks_key), args.masks
    elif args.uniform_sparsity is not None:
        masks = uniform_masks(model, args.uniform_sparsity)
        source = f'uniform sparsity {args.uniform_sparsity}'
    shape = (in_channels, height, width)
    print(f'Input: 1x{in_channels}x{height}x{width}; masks: {source}')
    if is_mmdet_detector(model):
        report = count_complexity(
            model, shape, masks=masks, forward_fn=extract_feat
        )
        print('Backbone + neck (extract_feat):')
        print_report(report)
        full, num_proposals = count_detector(model, shape, masks)
        print("\nWhole detector (mode='tensor'", end='')
        if num_proposals is not None:
            print(f', {num_proposals} RPN proposals on this input', end='')
        print('):')
        print_report(full)
        if num_proposals is not None:
            print(
                "In mode='tensor' the RoI heads (mask heads included) run on "
                'every proposal,\nso their MACs scale with the proposal '
                'count; inference runs the mask heads\nonly on the '
                'detections kept after NMS.'
            )
    else:
        report = count_complexity(model, shape, masks=masks)
        print_report(report)
        if 'auxiliary_head' in report.not_run:
            print(
                'The auxiliary head only adds a training loss; inference '
                'does not run it.'
            )
        full = None
    if args.out_json:
        result = dict(report.to_dict(), masks=source)
        if full is not None:
            result['whole_detector'] = dict(
                full.to_dict(), rpn_proposals=num_proposals
            )
        with open(args.out_json, 'w') as f:
            json.dump(result, f, indent=2)
    return report


def print_report(report):
    print(report.table())
    total = report.to_dict()['total']
    print(
        f'Params: {total["params"] / 1e6:.2f}M dense, '
        f'{total["params_nonzero"] / 1e6:.2f}M non-zero\n'
        f'MACs: {total["macs"] / 1e9:.2f}G dense, '
        f'{total["macs_sparse"] / 1e9:.2f}G sparse'
    )


def extract_feat(model, inputs):
    return model.extract_feat(inputs)


def count_detector(model, shape, masks):
    """Counts a whole mmdet detector in ``mode='tensor'``.

    Two-stage detectors need image metadata there; one generated data
    sample per image supplies it (image, pad and batch shape = the input,
    scale factor 1).

    Returns:
        tuple: The report and the number of RPN proposals per image
        (None without an RPN).
    """
    from mmdet.structures import DetDataSample

    height, width = shape[1:]
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            pad_shape=(height, width),
            batch_input_shape=(height, width),
            scale_factor=(1.0, 1.0),
        )
    )
    proposals = []
    rpn_head = getattr(model, 'rpn_head', None)
    if rpn_head is not None:
        rpn_predict = rpn_head.predict

        def predict_and_count(*args, **kwargs):
            results = rpn_predict(*args, **kwargs)
            proposals.append(len(results[0]))
            return results

        rpn_head.predict = predict_and_count
    try:
        report = count_complexity(
            model,
            shape,
            masks=masks,
            forward_fn=lambda m, x: m(x, [sample], mode='tensor'),
        )
    finally:
        if rpn_head is not None:
            del rpn_head.predict
    return report, proposals[-1] if proposals else None


if __name__ == '__main__':
    main()

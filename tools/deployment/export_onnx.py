"""Export a trained SLaK model to ONNX, optionally checked in onnxruntime.

Example:
    python tools/deployment/export_onnx.py CONFIG work_dirs/x/iter_200.pth \
        --out upernet_slak.onnx --shape 512 512 --verify
    # A checkpoint saved by tools/model_converters/deploy.py:
    python tools/deployment/export_onnx.py CONFIG slak_deploy.pth \
        --out slak.onnx --cfg-options model.backbone.deploy=True

Exported per task (the input is the preprocessed batch, normalized as the
config's data preprocessor does it): classifier logits; segmentor
``whole``-mode logits at the input size; detector backbone + neck features.
The backbone is fused (deploy form) unless ``--training-form`` is given.
See docs/deploy.md.
"""

import argparse

from mmengine.config import DictAction

from slak_mm.converters.onnx import DEFAULT_TOLERANCE, export_onnx
from slak_mm.utils.cli import add_size_pair_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a SLaK classifier, segmentor or detector to ONNX.'
    )
    parser.add_argument('config', help='the config the model was trained with')
    parser.add_argument('checkpoint', help='trained checkpoint (state_dict)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    add_size_pair_argument(
        parser,
        '--shape',
        default=None,
        help='input size; None: the data preprocessor size, else 224',
    )
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--training-form',
        action='store_true',
        help='export the unfused conv + BN branches instead of the deploy '
        'form',
    )
    parser.add_argument(
        '--verify',
        action='store_true',
        help='run the file in onnxruntime and compare with PyTorch',
    )
    parser.add_argument(
        '--tolerance',
        type=float,
        default=DEFAULT_TOLERANCE,
        help='largest max|a-b| / max|a| that --verify accepts',
    )
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.backbone.deploy=True',
    )
    args = parser.parse_args(argv)
    if args.shape == (None, None):
        args.shape = None
    return args


def main(argv=None):
    args = parse_args(argv)
    report = export_onnx(
        args.config,
        args.checkpoint,
        args.out,
        shape=args.shape,
        batch_size=args.batch_size,
        training_form=args.training_form,
        verify=args.verify,
        tolerance=args.tolerance,
        cfg_options=args.cfg_options,
        opset_version=args.opset,
    )
    shape = 'x'.join(map(str, report['shape']))
    print(
        f'Exported the {report["task"]} network ({report["form"]} form) '
        f'at input {shape} to {args.out}'
    )
    for name, out_shape in report['outputs'].items():
        print(f'  output {name}: {"x".join(map(str, out_shape))}')
    if args.verify:
        print(
            f'onnxruntime vs PyTorch: max abs diff '
            f'{report["max_abs_diff"]:.3e}, relative {report["rel_diff"]:.3e}'
            f' (tolerance {args.tolerance:.0e})'
        )
    return report


if __name__ == '__main__':
    main()

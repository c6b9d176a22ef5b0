"""Pipeline smoke test (`make demo-quick`): train a small SLaK UperNet on
easy generated ADE20K-layout data, test the checkpoint and compare its mIoU
with a constant-prediction baseline. The classes differ in colour and shape,
so any network solves it; tools/misc/demo_context.py (`make demo`) is the demo
where large kernels matter.

Runs on the CPU in a minute or two:
    python tools/misc/demo.py [--iters 200] [--work-dir work_dirs/demo]
"""

import argparse
import os.path as osp

from mmengine.config import Config

from slak_mm.apis.tool_runs import (
    data_root_options,
    read_test_metrics,
    run_tool,
    test_command,
    train_command,
)
from slak_mm.datasets import constant_prediction_scores, generate_ade20k

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    REPO, 'configs', 'segmentation', 'demo_upernet_slak_ade20k_synthetic.py'
)


def parse_args():
    # CONFIG's param_scheduler[0] warms the learning rate up until this
    # iteration; param_scheduler[1] runs from there to --iters.
    warmup_iters = Config.fromfile(CONFIG).param_scheduler[0]['end']
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--iters',
        type=int,
        default=200,
        help=f"training iterations, more than the config's "
        f'{warmup_iters}-iteration warm-up',
    )
    parser.add_argument(
        '--data-root', default=osp.join(REPO, 'data', 'synthetic')
    )
    parser.add_argument(
        '--work-dir', default=osp.join(REPO, 'work_dirs', 'demo')
    )
    parser.add_argument(
        '--min-gain',
        type=float,
        default=10.0,
        help='mIoU points the model must beat the baseline by',
    )
    args = parser.parse_args()
    if args.iters <= warmup_iters:
        parser.error(
            f'--iters {args.iters}: the config warms the learning rate up '
            f'for {warmup_iters} iterations, so --iters must be more than '
            f'{warmup_iters}'
        )
    return args


def show_progress(line):
    if any(key in line for key in ('Iter(', 'Error', 'density', 'mIoU')):
        return line.rstrip('\n')
    return None


def run(command):
    print('+', ' '.join(command), flush=True)
    try:
        return run_tool(command, REPO, show_progress)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


def main():
    args = parse_args()
    summary = generate_ade20k(
        args.data_root,
        num_train=96,
        num_val=24,
        image_size=96,
        num_classes=4,
        seed=0,
        overwrite=True,
    )
    data_root = summary['data_root']
    print(
        f'generated {data_root}: 96 train / 24 val images, classes '
        f'{summary["classes"]}'
    )
    data = data_root_options(data_root)
    iters = args.iters
    run(
        train_command(
            CONFIG,
            args.work_dir,
            [
                *data,
                f'train_cfg.max_iters={iters}',
                f'train_cfg.val_interval={iters}',
                f'default_hooks.checkpoint.interval={iters}',
                f'param_scheduler.1.end={iters}',
            ],
        )
    )
    checkpoint = osp.join(args.work_dir, f'iter_{iters}.pth')
    output = run(
        test_command(CONFIG, checkpoint, osp.join(args.work_dir, 'test'), data)
    )
    try:
        miou = read_test_metrics(output)['mIoU']
    except (ValueError, KeyError):
        raise SystemExit('tools/test.py printed no mIoU') from None
    baseline, _ = constant_prediction_scores(
        osp.join(data_root, 'annotations', 'validation'), 4
    )
    print(f'\nSLaK UperNet after {iters} iterations: mIoU {miou:.2f}')
    print(f'constant (most frequent class) prediction:  mIoU {baseline:.2f}')
    if miou < baseline + args.min_gain:
        raise SystemExit(
            f'the model does not beat the baseline by {args.min_gain} points'
        )
    print(f'checkpoint: {checkpoint}')


if __name__ == '__main__':
    main()

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
import re
import subprocess
import sys

from slak_mm.datasets import constant_prediction_scores, generate_ade20k

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    REPO, 'configs', 'segmentation', 'demo_upernet_slak_ade20k_synthetic.py'
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=200)
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
    return parser.parse_args()


def run(command):
    print('+', ' '.join(command), flush=True)
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if (
            'Iter(' in line
            or 'Error' in line
            or 'density' in line
            or 'mIoU' in line
        ):
            print(line, end='', flush=True)
    if process.wait() != 0:
        print(''.join(lines[-60:]))
        raise SystemExit(f'command failed with exit code {process.returncode}')
    return ''.join(lines)


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
    common = [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
    ]
    run(
        [
            sys.executable,
            'tools/train.py',
            CONFIG,
            '--work-dir',
            args.work_dir,
            *common,
            f'train_cfg.max_iters={args.iters}',
            f'train_cfg.val_interval={args.iters}',
            f'default_hooks.checkpoint.interval={args.iters}',
            f'param_scheduler.1.end={args.iters}',
        ]
    )
    checkpoint = osp.join(args.work_dir, f'iter_{args.iters}.pth')
    output = run(
        [
            sys.executable,
            'tools/test.py',
            CONFIG,
            checkpoint,
            '--work-dir',
            osp.join(args.work_dir, 'test'),
            *common,
        ]
    )
    found = re.findall(r'Iter\(test\).*?mIoU: ([0-9.]+)', output)
    if not found:
        raise SystemExit('tools/test.py printed no mIoU')
    miou = float(found[-1])
    baseline, _ = constant_prediction_scores(
        osp.join(data_root, 'annotations', 'validation'), 4
    )
    print(f'\nSLaK UperNet after {args.iters} iterations: mIoU {miou:.2f}')
    print(f'constant (most frequent class) prediction:  mIoU {baseline:.2f}')
    if miou < baseline + args.min_gain:
        raise SystemExit(
            f'the model does not beat the baseline by {args.min_gain} points'
        )
    print(f'checkpoint: {checkpoint}')


if __name__ == '__main__':
    main()

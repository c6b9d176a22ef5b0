"""Forward demo of SLaK-T: shapes, parameter counts, speed, deploy check.

Example:
    python tools/demo.py --size 224 --batch-size 1 --repeats 3
"""

import argparse
import time

import torch

from slak_mm.models import SLaK


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='tiny')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args()


def time_forward(model, images, repeats):
    with torch.no_grad():
        model(images)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            outs = model(images)
            times.append(time.perf_counter() - start)
    times.sort()
    return outs, times[len(times) // 2]


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SLaK(arch=args.arch, out_indices=(0, 1, 2, 3))
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    print(
        f'SLaK-{args.arch}: channels {model.channels}, kernels '
        f'{model.kernel_sizes} + {model.small_kernel}, '
        f'{params / 1e6:.2f}M parameters (dense, downstream form)'
    )

    images = torch.randn(args.batch_size, 3, args.size, args.size)
    outs, seconds = time_forward(model, images, args.repeats)
    for i, out in enumerate(outs):
        print(f'  stage {i} output: {tuple(out.shape)}')
    model.switch_to_deploy()
    deploy_outs, deploy_seconds = time_forward(model, images, args.repeats)
    max_rel = max(
        ((a - b).abs().max() / b.abs().max()).item()
        for a, b in zip(deploy_outs, outs)
    )
    print(
        f'eval forward, batch {args.batch_size}, {args.size}x{args.size}, '
        f'{torch.get_num_threads()} threads:'
    )
    print(f'  {"form":<8}{"s/batch":>10}{"img/s":>10}')
    print(f'  {"train":<8}{seconds:>10.3f}{args.batch_size / seconds:>10.2f}')
    print(
        f'  {"deploy":<8}{deploy_seconds:>10.3f}'
        f'{args.batch_size / deploy_seconds:>10.2f}'
    )
    print(f'deploy vs. train-form max relative difference: {max_rel:.2e}')
    if max_rel > 1e-5:
        raise SystemExit('deploy form does not match the train form')


if __name__ == '__main__':
    main()

"""Train a model from an mmdet, mmseg or mmpretrain config.

The config's ``default_scope`` decides the toolkit. Examples:
    python tools/train.py configs/segmentation/upernet_slak_t_ade20k.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume
    bash tools/dist_train.sh CONFIG 8

``load_from`` and ``--resume`` load strictly (see
slak_mm.engine.StrictLoadingRunner): a checkpoint that does not fit the
model stops the run with every missing or misshapen key and both shapes.
"""

import argparse

import slak_mm  # noqa: F401  registers SLaK and the checkpoint allow-list
from slak_mm.engine.runner_utils import (
    add_runner_arguments,
    build_runner,
    close_process_group,
    enable_amp,
    load_config,
    parse_runner_args,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a SLaK model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in '
        'the work dir when no path is given',
    )
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision: fp16 with a loss scaler on '
        'CUDA, bf16 autocast on a CPU-only machine',
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the actual batch size over '
        'auto_scale_lr.base_batch_size',
    )
    add_runner_arguments(parser)
    return parse_runner_args(parser)


def main():
    args = parse_args()
    cfg = load_config(
        args.config, args.cfg_options, args.work_dir, args.launcher
    )
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in (
            cfg.auto_scale_lr
        ):
            raise KeyError(
                f'{args.config} has no '
                'auto_scale_lr.base_batch_size to scale from'
            )
        cfg.auto_scale_lr.enable = True

    runner = build_runner(cfg)
    runner.train()
    close_process_group()


if __name__ == '__main__':
    main()

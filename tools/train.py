"""Train a model from an mmdet, mmseg or mmpretrain config.

The config's ``default_scope`` decides the toolkit. Examples:
    python tools/train.py configs/segmentation/upernet_slak_t_ade20k.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume
    bash tools/dist_train.sh CONFIG 8

``load_from`` and ``--resume`` load strictly (see
slak_mm.engine.StrictLoadingRunner): a checkpoint that does not fit the
model stops the run with every missing or misshapen key and both shapes.
"""

import slak_mm  # noqa: F401  registers SLaK and the checkpoint allow-list
from slak_mm.apis import (
    build_runner,
    enable_amp,
    enable_auto_scale_lr,
    launcher_process_group,
    load_config,
    make_runner_parser,
    parse_runner_args,
    set_resume,
)


def parse_args():
    parser = make_runner_parser(
        'Train a SLaK model', 'config: train config file path'
    )
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
    return parse_runner_args(parser)


def main():
    args = parse_args()
    cfg = load_config(
        args.config, args.cfg_options, args.work_dir, args.launcher
    )
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg, args.config)
    with launcher_process_group(cfg):
        build_runner(cfg).train()


if __name__ == '__main__':
    main()

"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config.

The config's ``default_scope`` decides the toolkit. Examples:
    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --out results.pkl
    python tools/test.py CONFIG CHECKPOINT --amp  # fp16 on CUDA, bf16 on CPU
    bash tools/dist_test.sh CONFIG CHECKPOINT 8

The checkpoint must fit the config's model: a missing tensor or one of
another shape stops the run with every such key and both shapes (see
slak_mm.engine.StrictLoadingRunner); a deployed checkpoint needs
``--cfg-options model.backbone.deploy=True``.
"""

import slak_mm  # noqa: F401  registers SLaK and the checkpoint allow-list
from slak_mm.apis import (
    add_dump_metric,
    add_fp32_outputs_hook,
    build_runner,
    enable_test_amp,
    launcher_process_group,
    load_config,
    make_runner_parser,
    parse_runner_args,
    set_test_output,
    trigger_visualization_hook,
)


def parse_args():
    parser = make_runner_parser(
        'Test a SLaK model',
        'config: test config file path',
        'checkpoint: checkpoint file',
    )
    parser.add_argument(
        '--out',
        help='mmdet/mmpretrain: a .pkl file for the raw predictions; '
        'mmseg: a directory for the predicted label maps',
    )
    parser.add_argument(
        '--show-dir', help='directory where painted predictions are saved'
    )
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test: fp16 autocast on CUDA, '
        'bf16 autocast on a CPU-only machine',
    )
    return parse_runner_args(parser)


def main():
    args = parse_args()
    cfg = load_config(
        args.config, args.cfg_options, args.work_dir, args.launcher
    )
    cfg.load_from = args.checkpoint
    if args.amp:
        enable_test_amp(cfg)
    # Under autocast (--amp or the config's test_cfg.fp16) the evaluator
    # gets fp32 predictions.
    add_fp32_outputs_hook(cfg)
    if args.show_dir:
        trigger_visualization_hook(cfg, args.show_dir)
    if args.out:
        set_test_output(cfg, args.out)
    with launcher_process_group(cfg):
        runner = build_runner(cfg)
        if args.out:
            add_dump_metric(runner, args.out)
        runner.test()


if __name__ == '__main__':
    main()

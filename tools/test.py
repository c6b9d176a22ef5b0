"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config.

The config's ``default_scope`` decides the toolkit. Examples:
    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --out results.pkl
    bash tools/dist_test.sh CONFIG CHECKPOINT 8

The checkpoint must fit the config's model: a missing tensor or one of
another shape stops the run with every such key and both shapes (see
slak_mm.engine.StrictLoadingRunner); a deployed checkpoint needs
``--cfg-options model.backbone.deploy=True``.
"""

import argparse

import slak_mm  # noqa: F401  registers SLaK and the checkpoint allow-list
from slak_mm.engine.runner_utils import (
    add_runner_arguments,
    build_runner,
    close_process_group,
    load_config,
    parse_runner_args,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Test a SLaK model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the metrics')
    parser.add_argument(
        '--out',
        help='mmdet/mmpretrain: a .pkl file for the raw predictions; '
        'mmseg: a directory for the predicted label maps',
    )
    parser.add_argument(
        '--show-dir', help='directory where painted predictions are saved'
    )
    add_runner_arguments(parser)
    return parse_runner_args(parser)


def enable_visualization(cfg, show_dir):
    """Saves painted predictions to ``show_dir`` with the toolkit's hook."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise KeyError(
            '--show-dir needs default_hooks.visualization in the config'
        )
    hook['interval'] = 1  # paint every test image, not every 50th
    if cfg.default_scope == 'mmseg':
        hook['draw'] = True
        cfg.visualizer['save_dir'] = show_dir
    elif cfg.default_scope == 'mmdet':
        hook['draw'] = True
        hook['test_out_dir'] = show_dir
    else:
        hook['enable'] = True
        hook['out_dir'] = show_dir


def main():
    args = parse_args()
    cfg = load_config(
        args.config, args.cfg_options, args.work_dir, args.launcher
    )
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.out and cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    runner = build_runner(cfg)

    if args.out and cfg.default_scope != 'mmseg':
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out}')
        if cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults as DumpMetric
        else:
            from mmengine.evaluator import DumpResults as DumpMetric
        runner.test_evaluator.metrics.append(
            DumpMetric(out_file_path=args.out)
        )
    runner.test()
    close_process_group()


if __name__ == '__main__':
    main()
